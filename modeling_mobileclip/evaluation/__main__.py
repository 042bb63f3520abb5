"""`python -m modeling_mobileclip.evaluation ...`: the evaluation command line (`cli.py`)."""

import sys

from .cli import run

sys.exit(run())
