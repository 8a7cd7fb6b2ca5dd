"""The ``hookrelay`` command's entry point: holds SIGHUP (see ``early_signals``) before the
CLI and its dependencies are imported, which takes a few hundred milliseconds."""

from __future__ import annotations

from hookrelay.ops.early_signals import hold_sighup


def main() -> int:
    """Run the ``hookrelay`` command line; returns its exit status."""
    hold_sighup()
    from hookrelay.commands.cli import main as cli_main  # noqa: PLC0415  # after the signal is held

    return cli_main()
