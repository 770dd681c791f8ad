"""`python -m irmas_lib` runs the `irmas` command."""
from irmas_lib.cli import main

raise SystemExit(main())
