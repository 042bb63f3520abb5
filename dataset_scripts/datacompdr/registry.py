"""``load_dataset("datacompdr", ...)``: the name in datasets' table of packaged builders, and a hook on its factory.

How, and why this way (datasets 5.2). ``datasets`` >= 4 no longer runs loading scripts: a ``.py`` path, a folder
holding ``<name>.py`` or a Hub repo with one raises ``RuntimeError("Dataset scripts are no longer supported")``,
and ``trust_remote_code`` is ignored. What remains is the table of *packaged* builders,
``datasets.packaged_modules._PACKAGED_DATASETS_MODULES`` (name -> (importable module path, source hash)), which
``dataset_module_factory`` consults *before* any local-folder or Hub lookup, then imports the module and picks its
``DatasetBuilder`` subclass (the first one defined in that very module). So :func:`register_datacompdr`:

1. adds ``"datacompdr" -> ("dataset_scripts.datacompdr.builder", hash of the source of every module of this
   package and of augment_replay)``. The hash keys the Arrow cache, so editing any of those files invalidates
   prepared copies. The module is importable in every process that has this package installed, including spawned
   DataLoader workers and ``accelerate launch`` ranks, and unpickling a builder there imports ``dataset_scripts``,
   which registers the name again.
2. For packaged names, ``PackagedDatasetModuleFactory.get_module`` resolves ``data_files`` itself. When none are
   given, it scans the *current working directory* for data files (which would override our configs' Hub
   defaults with whatever lies in the cwd, or fail). Its glob also does not understand webdataset brace ranges
   such as ``{00000..00015}``. We wrap that one method: for the name ``"datacompdr"`` it returns
   :func:`dataset_module` (no cwd scan, brace expansion, our configs); every other name goes to the original
   method unchanged. The wrapper is installed once (idempotent), and only if the factory still has the shape we
   checked (``name``/``data_files``/``data_dir``/``download_config`` attributes). Otherwise we warn:
   ``load_dataset("datacompdr", data_files=...)`` still works through step 1 alone, but config-only calls should
   then use the builder class.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any, Sequence

from datasets.data_files import DataFilesDict, sanitize_patterns

from . import builder
from .configs import named_configs
from .data_files import expand_data_files

logger = logging.getLogger(__name__)

NAME = "datacompdr"


def builder_sources() -> list[Path]:
    """The files whose code shapes the builder's output: every module of this package, and augment_replay (whose
    entry parsing fills the ``param_aug`` column)."""
    package = Path(__file__).resolve().parent
    return sorted(package.glob("*.py")) + [package.parent / "augment_replay.py"]


def source_hash(paths: Sequence[Path]) -> str:
    """datasets' hash of packaged-module code (comments and blank lines ignored) over the files ``paths``, in order."""
    from datasets.packaged_modules import _hash_python_lines

    return _hash_python_lines([line for path in paths for line in Path(path).read_text(encoding="utf-8").splitlines()])


def dataset_module(data_files=None, data_dir=None, download_config=None):
    """The ``DatasetModule`` that ``load_dataset("datacompdr", ...)`` resolves to.

    Unlike the generic packaged-module factory it never scans the working directory when no ``data_files`` are
    given (the config's Hub defaults apply), and it expands webdataset brace ranges in ``data_files``.
    """
    from datasets.load import BuilderConfigsParameters, DatasetModule
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    module_path, module_hash = _PACKAGED_DATASETS_MODULES[NAME]
    builder_kwargs: dict[str, Any] = {"dataset_name": NAME}
    if data_files is not None or data_dir is not None:
        base_path = Path(data_dir or "").expanduser().resolve().as_posix()
        patterns = sanitize_patterns(expand_data_files(data_files)) if data_files is not None else {
            "train": ["**/*.tar"]}
        builder_kwargs["data_files"] = DataFilesDict.from_patterns(
            patterns, download_config=download_config, base_path=base_path)
    return DatasetModule(
        module_path, module_hash, builder_kwargs,
        builder_configs_parameters=BuilderConfigsParameters(
            builder_configs=named_configs(), default_config_name=builder.DataCompDR.DEFAULT_CONFIG_NAME),
    )


def register_datacompdr() -> None:
    """Steps 1 and 2 of the module docstring; run by ``import dataset_scripts``."""
    from datasets import load as datasets_load
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    _PACKAGED_DATASETS_MODULES[NAME] = (builder.__name__, source_hash(builder_sources()))

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
        if getattr(self, "name", None) != NAME:
            return original(self)
        return dataset_module(self.data_files, self.data_dir, self.download_config)

    get_module._datacompdr_hook = True
    get_module.__wrapped__ = original
    factory.get_module = get_module
