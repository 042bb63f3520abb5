"""``python -m dataset_scripts.reinforce ...`` and ``accelerate launch -m dataset_scripts.reinforce ...``."""

from .cli import main

main()
