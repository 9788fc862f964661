"""The ``edgecnn`` command line: one module per sub-command, wired in :mod:`edgecnn.cli.main`."""
