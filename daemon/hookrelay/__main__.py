"""``python -m hookrelay`` is the same as the ``hookrelay`` command."""

import sys

from hookrelay.entry import main

sys.exit(main())
