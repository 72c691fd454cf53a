"""`python -m sparse_soups ...`, the same as the `sparse-soups` command."""

import sys

from .cli import main

sys.exit(main())
