"""`python -m entrenar_tui` is `entrenar-tui`."""

from entrenar_tui.cli import main

raise SystemExit(main())
