"""``python -m benchmark``: the command line (see ``benchmark.cli``)."""

from benchmark.cli import main

raise SystemExit(main())
