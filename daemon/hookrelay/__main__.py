"""``python -m hookrelay`` is the same as the ``hookrelay`` command."""

import sys

from hookrelay.commands.entry import main

sys.exit(main())
