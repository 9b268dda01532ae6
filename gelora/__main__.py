"""`python -m gelora ...`: the `gelora` command without its entry point on PATH."""
import sys

from gelora.cli import main

sys.exit(main())
