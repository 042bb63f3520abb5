"""Dataset code for mobileclip-hf: the DataCompDR / DFNDR builder and augmentation replay.

Importing this package makes ``datasets.load_dataset("datacompdr", ...)`` work::

    import dataset_scripts
    from datasets import load_dataset

    ds = load_dataset("datacompdr", "12m", streaming=True, split="train")
    ds = load_dataset("datacompdr", data_files="shards/{00000..00015}.tar", split="train")

How, and why this way (datasets 5.2). ``datasets`` >= 4 no longer runs loading scripts: a ``.py`` path, a folder
holding ``<name>.py`` or a Hub repo with one raises ``RuntimeError("Dataset scripts are no longer supported")``,
and ``trust_remote_code`` is ignored. What remains is the table of *packaged* builders,
``datasets.packaged_modules._PACKAGED_DATASETS_MODULES`` (name -> (importable module path, source hash)), which
``dataset_module_factory`` consults *before* any local-folder or Hub lookup, then imports the module and picks its
``DatasetBuilder`` subclass. So:

1. We add ``"datacompdr" -> ("dataset_scripts.datacompdr", hash of its and augment_replay's source)``. The hash
   keys the Arrow cache, so editing the builder invalidates prepared copies. The module is importable in every
   process that has this package installed, including spawned DataLoader workers and ``accelerate launch`` ranks,
   and unpickling a builder there imports this package and registers the name again.
2. For packaged names, ``PackagedDatasetModuleFactory.get_module`` resolves ``data_files`` itself. When none are
   given, it scans the *current working directory* for data files (which would override our configs' Hub
   defaults with whatever lies in the cwd, or fail). Its glob also does not understand webdataset brace ranges
   such as ``{00000..00015}``. We wrap that one method: for the name ``"datacompdr"`` it returns
   ``datacompdr.dataset_module(...)`` (no cwd scan, brace expansion, our configs); every other name goes to the
   original method unchanged. The wrapper is installed once (idempotent), and only if the factory still has the
   shape we checked (``name``/``data_files``/``data_dir``/``download_config`` attributes). Otherwise we warn:
   ``load_dataset("datacompdr", data_files=...)`` still works through step 1 alone, but config-only calls should
   then use the builder class.

The builder class is also usable directly, without the registry::

    from dataset_scripts.datacompdr import DataCompDR
    ds = DataCompDR(config_name="12m", data_files={"train": [...]}).as_streaming_dataset(split="train")
"""

import inspect
import logging

from . import augment_replay, datacompdr
from .augment_replay import AugmentationSampler, ReplayTransform, sample_params
from .datacompdr import DataCompDR, datacompdr_stats, get_metadata, reset_datacompdr_stats

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

logger = logging.getLogger(__name__)


def _register_datacompdr() -> None:
    from datasets import load as datasets_load
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES, _hash_python_lines

    # The builder's output also depends on augment_replay's entry parsing, so both sources key the cache.
    source_hash = _hash_python_lines(
        inspect.getsource(datacompdr).splitlines() + inspect.getsource(augment_replay).splitlines())
    _PACKAGED_DATASETS_MODULES[datacompdr.NAME] = (datacompdr.__name__, source_hash)

    factory = getattr(datasets_load, "PackagedDatasetModuleFactory", None)
    original = getattr(factory, "get_module", None)
    expected = {"name", "data_files", "data_dir", "download_config"}
    if original is None or not expected <= set(inspect.signature(factory.__init__).parameters):
        logger.warning("datasets.load.PackagedDatasetModuleFactory.get_module not found (datasets version change): "
                       "load_dataset('datacompdr') needs data_files=; or use dataset_scripts.datacompdr.DataCompDR")
        return
    if getattr(original, "_datacompdr_hook", False):
        return

    def get_module(self):
        if getattr(self, "name", None) != datacompdr.NAME:
            return original(self)
        return datacompdr.dataset_module(self.data_files, self.data_dir, self.download_config)

    get_module._datacompdr_hook = True
    get_module.__wrapped__ = original
    factory.get_module = get_module


_register_datacompdr()
