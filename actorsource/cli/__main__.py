"""``python -m actorsource.cli``: the command line."""

from . import main

raise SystemExit(main())
