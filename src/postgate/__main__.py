"""``python -m postgate`` runs the command line."""

from postgate.commands.cli import main

raise SystemExit(main())
