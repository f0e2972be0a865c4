"""The ``rftpack`` command: argument parsing and all terminal output (rich)."""
