"""`python -m app` runs the same CLI as the `tandem` command."""

from app.cli import main

raise SystemExit(main())
