"""`python -m modeling_mobileclip.conversion ...`: the converter's command line (`cli.py`)."""

import sys

from .cli import main

sys.exit(main())
