"""DataCompDR / DFNDR (Apple's reinforced image-text datasets) as a 🤗 ``datasets`` builder.

Usage (``import dataset_scripts`` registers the name ``"datacompdr"``, see :mod:`.registry`)::

    import dataset_scripts
    from datasets import load_dataset

    ds = load_dataset("datacompdr", "12m", streaming=True, split="train")          # Apple's Hub shards
    ds = load_dataset("datacompdr", data_files="shards/{00000..00015}.tar", split="train")  # local shards
    ds = load_dataset("datacompdr", "12m", data_files="shards/*.tar", split="train",
                      image_dir="images/", captions="datacomp12m/*.parquet")         # + images and GT captions

or, without the name registry, the builder class directly::

    from dataset_scripts.datacompdr import DataCompDR
    builder = DataCompDR(config_name="12m", data_files={"train": ["shards/00000000.tar"]})
    ds = builder.as_streaming_dataset(split="train")

Modules, one step each:

* ``configs``: the named configs (``12m``, ``12m-bf16``, ``1b``, ``dfndr-*``; ``local``, the default) and every
  ``load_dataset`` keyword (``DataCompDRConfig``); ``data_files``: webdataset brace ranges.
* ``members``: the shard layout, tar members grouped into samples, damage detected; ``decoders``: one per member.
* ``metadata``: teachers in embedding order and the other dataset-level facts (``get_metadata``, ``config.json``).
* ``features``: the columns; ``assemble``: one sample's members -> one example, checked.
* ``join_index`` / ``joins``: the optional ``captions=`` / ``image_dir=`` joins by uid, crop boxes mapped.
* ``skips``: why a sample is dropped, counted per process (``datacompdr_stats()``); ``strict=True`` raises.
* ``builder``: the ``GeneratorBasedBuilder``; ``registry``: ``load_dataset("datacompdr")`` wiring.
"""

from .builder import DataCompDR
from .configs import DataCompDRConfig, named_configs
from .data_files import expand_braces, expand_data_files
from .features import build_features
from .joins import read_image_size
from .members import IMAGE_EXTENSIONS, RawSample, iter_raw_samples, split_member_name
from .metadata import DataCompDRMetadata, Teacher, get_metadata
from .registry import NAME, dataset_module
from .skips import SKIP_REASONS, DataCompDRSampleError, datacompdr_stats, reset_datacompdr_stats

__all__ = [
    "IMAGE_EXTENSIONS",
    "NAME",
    "SKIP_REASONS",
    "DataCompDR",
    "DataCompDRConfig",
    "DataCompDRMetadata",
    "DataCompDRSampleError",
    "RawSample",
    "Teacher",
    "build_features",
    "datacompdr_stats",
    "dataset_module",
    "expand_braces",
    "expand_data_files",
    "get_metadata",
    "iter_raw_samples",
    "named_configs",
    "read_image_size",
    "reset_datacompdr_stats",
    "split_member_name",
]
