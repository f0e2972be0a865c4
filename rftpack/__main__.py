"""``python -m rftpack`` runs the command-line interface."""

from rftpack.cli.main import main

raise SystemExit(main())
