"""`python -m modeling_mobileclip.embedding ...`: the embedding tool's command line (`cli.py`)."""

import sys

from .cli import run

sys.exit(run())
