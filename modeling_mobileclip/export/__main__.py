"""`python -m modeling_mobileclip.export ...`: the exporter's command line (`cli.py`)."""

import sys

from .cli import run

sys.exit(run())
