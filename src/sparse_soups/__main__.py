"""`python -m sparse_soups ...`, the same as the `sparse-soups` command.

In a local workflow run the command goes to the warm worker (worker.py), which already
has torch imported; without one it runs here."""

import sys

from .client import run_in_worker

status = run_in_worker(sys.argv[1:])
if status is None:
    from .cli import main

    status = main()
sys.exit(status)
