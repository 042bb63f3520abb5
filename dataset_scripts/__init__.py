"""Dataset code for mobileclip-hf: the DataCompDR / DFNDR builder and augmentation replay.

Importing this package makes ``datasets.load_dataset("datacompdr", ...)`` work::

    import dataset_scripts
    from datasets import load_dataset

    ds = load_dataset("datacompdr", "12m", streaming=True, split="train")
    ds = load_dataset("datacompdr", data_files="shards/{00000..00015}.tar", split="train")

How, and why this way: ``dataset_scripts/datacompdr/registry.py``. The builder class is also usable directly,
without the registry::

    from dataset_scripts.datacompdr import DataCompDR
    ds = DataCompDR(config_name="12m", data_files={"train": [...]}).as_streaming_dataset(split="train")
"""

from . import augment_replay, datacompdr
from .augment_replay import AugmentationSampler, ReplayTransform, sample_params
from .datacompdr import DataCompDR, datacompdr_stats, get_metadata, reset_datacompdr_stats
from .datacompdr.registry import register_datacompdr

__all__ = [
    "AugmentationSampler",
    "DataCompDR",
    "ReplayTransform",
    "augment_replay",
    "datacompdr",
    "datacompdr_stats",
    "get_metadata",
    "reset_datacompdr_stats",
    "sample_params",
]

register_datacompdr()
