"""transformers' own common test mixins (ModelTesterMixin, ConfigTester, ProcessorTesterMixin, ...), imported from the
sdist of the installed transformers version, so our models meet the contracts every transformers model is tested on.

The wheel ships no tests. The sdist ships `tests/test_*_common.py`, but not four modules of the repository they import
(`tests/exporters/test_export.py`, `tests/generation/test_utils.py`, `tests/utils/test_configuration_utils.py`,
`utils/fetch_hub_objects_for_ci.py`). `import_common("test_modeling_common")` downloads the sdist once with pip into a
cache, extracts `tests/*.py` unchanged as the package `transformers_tests`, adds `SHIMS` for those four modules, and
imports the requested module. Without network on the first run, or without `parameterized` (the `test` extra), it
skips the calling test module and says why.
"""

import importlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

PACKAGE = "transformers_tests"
# Stand-ins for the repository modules the sdist's common tests import (see the module docstring). Each keeps the
# name and the behaviour our tests rely on; none adds a test.
SHIMS = {
    # Export tests (torch.export of every model class) are a separate mixin that only the repository has.
    f"{PACKAGE}/exporters/test_export.py": "class ExportTesterMixin:\n    pass\n",
    # Generation tests: ModelTesterMixin only checks that non-generative models do not inherit the mixin.
    f"{PACKAGE}/generation/test_utils.py": "class GenerationTesterMixin:\n    pass\n",
    # `ConfigTester.check_config_arguments_init`: a non-default value for every field of PreTrainedConfig; a field
    # added by a later transformers version makes the import fail here rather than go untested.
    f"{PACKAGE}/utils/test_configuration_utils.py": '''\
import dataclasses

from transformers import PreTrainedConfig

config_common_kwargs = {
    "return_dict": False,
    "output_hidden_states": True,
    "output_attentions": True,
    "dtype": "float16",
    "chunk_size_feed_forward": 5,
    "architectures": ["BertModel"],
    "id2label": {0: "label"},
    "label2id": {"label": "0"},
    "problem_type": "regression",
}
_NOT_SETTABLE = {"transformers_version", "is_encoder_decoder"}
_missing = {f.name for f in dataclasses.fields(PreTrainedConfig)} - _NOT_SETTABLE - set(config_common_kwargs)
if _missing:
    raise ImportError(f"config_common_kwargs has no value for PreTrainedConfig fields {sorted(_missing)}; add one.")
''',
    # The repository's CI pre-downloads the URLs its tests use; a URL that was not pre-downloaded is returned as is.
    "utils/fetch_hub_objects_for_ci.py": "def url_to_local_path(url, return_url_if_not_found=True):\n    return url\n",
}


def cache_root() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "mobileclip-hf" / f"transformers-{importlib.metadata.version('transformers')}-tests"


def _download_sdist(version: str, into: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
               f"transformers=={version}", "--dest", str(into)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    archives = sorted(into.glob("transformers-*.tar.gz"))
    if done.returncode != 0 or not archives:
        raise RuntimeError(f"`{' '.join(command)}` failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return archives[0]


def _build(root: Path) -> None:
    """Write the sdist's tests and the shims into `root` (built in a temporary folder, then renamed into place)."""
    version = importlib.metadata.version("transformers")
    root.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=root.parent, prefix=".build-"))
    try:
        archive = _download_sdist(version, work)
        package = work / "tree" / PACKAGE
        package.mkdir(parents=True)
        with tarfile.open(archive) as sdist:
            for member in sdist.getmembers():
                parts = Path(member.name).parts  # transformers-X/tests/test_*.py: the top-level test modules only
                if member.isfile() and len(parts) == 3 and parts[1] == "tests" and parts[2].endswith(".py"):
                    (package / parts[2]).write_bytes(sdist.extractfile(member).read())
        if not (package / "test_modeling_common.py").exists():
            raise RuntimeError(f"the transformers {version} sdist has no tests/test_modeling_common.py")
        for relative, source in SHIMS.items():
            path = work / "tree" / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(source)
        # Every folder of the package is a package (the common tests import each other relatively).
        for folder in [package, *(p for p in package.rglob("*") if p.is_dir())]:
            (folder / "__init__.py").touch()
        try:
            (work / "tree").rename(root)
        except OSError:  # another process built it first
            if not (root / PACKAGE / "test_modeling_common.py").exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def import_common(name: str):
    """`transformers_tests.<name>` from the installed version's sdist; skips the calling module if unavailable."""
    try:
        importlib.import_module("parameterized")
    except ImportError:
        pytest.skip("transformers' common tests need `parameterized`: pip install -e '.[test]'",
                    allow_module_level=True)
    root = cache_root()
    if not (root / PACKAGE / "test_modeling_common.py").exists():
        try:
            _build(root)
        except (RuntimeError, OSError, subprocess.TimeoutExpired, tarfile.TarError) as error:
            pytest.skip(f"transformers' common tests come from its sdist, which could not be fetched into {root} "
                        f"(offline?): {error}", allow_module_level=True)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module(f"{PACKAGE}.{name}")
