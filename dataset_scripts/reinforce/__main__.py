"""``python -m dataset_scripts.reinforce ...`` and ``accelerate launch -m dataset_scripts.reinforce ...``."""

import sys

from .cli import console_main

sys.exit(console_main())
