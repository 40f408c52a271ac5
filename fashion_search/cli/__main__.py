"""`python -m fashion_search.cli` runs the `fashion-search` command."""

import sys

from fashion_search.cli.main import main

sys.exit(main())
