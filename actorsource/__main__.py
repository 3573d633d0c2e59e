"""``python -m actorsource``: the command line (as the ``actorsource`` command)."""

from .cli import main

raise SystemExit(main())
