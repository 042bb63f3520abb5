"""`load_dataset("datacompdr")` wiring (dataset_scripts/datacompdr/registry.py): the packaged-module entry names the
builder module under a hash of every source file, and the factory hook resolves config names without scanning the
working directory."""

import re
from pathlib import Path

import datasets
import pytest
from datasets import load_dataset, load_dataset_builder

import dataset_scripts  # noqa: F401  (registers load_dataset("datacompdr"))
from datacompdr_shards import (
    TEACHERS,
    fresh_datacompdr_stats,  # noqa: F401  (autouse fixture: each test starts at zero counts)
    write_shards,
)
from dataset_scripts.datacompdr import DataCompDR


def test_config_name_alone_targets_apple_hub_repo_not_cwd(tmp_path, monkeypatch):
    """`load_dataset("datacompdr", "12m")` resolves the Hub shards (offline here, so it must fail *on the Hub*),
    and never picks up files from the working directory."""
    write_shards(tmp_path, n_shards=1, per_shard=1)  # a tar in the cwd that must not be used
    monkeypatch.chdir(tmp_path)
    if datasets.config.HF_HUB_OFFLINE:  # the Hub listing is refused, naming Apple's repo
        with pytest.raises(ConnectionError, match="apple/DataCompDR-12M"):
            load_dataset("datacompdr", "12m", streaming=True, split="train")
    else:
        files = load_dataset_builder("datacompdr", "12m").config.data_files["train"]
        assert len(files) == 1024 and files[0].startswith("hf://datasets/apple/DataCompDR-12M")
    with pytest.raises(ValueError, match="has no data files; pass data_files="):
        load_dataset("datacompdr", streaming=True, split="train")
    # other packaged builders are untouched by the registration
    (tmp_path / "rows.jsonl").write_text('{"a": 1}\n')
    assert load_dataset("json", data_files="rows.jsonl", split="train", cache_dir=str(tmp_path / "c"))[0] == {"a": 1}


def test_registered_module_defines_the_builder_and_its_hash_covers_every_source(tmp_path):
    """datasets imports the registered module and takes the DatasetBuilder subclass defined there; the hash that keys
    the Arrow cache covers every file of the datacompdr subpackage plus augment_replay.py, so editing any of them
    gives prepared copies a new cache folder."""
    from datasets.load import import_main_class
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    from dataset_scripts.datacompdr import registry

    module_path, module_hash = _PACKAGED_DATASETS_MODULES["datacompdr"]
    assert module_path == "dataset_scripts.datacompdr.builder" and import_main_class(module_path) is DataCompDR
    sources = registry.builder_sources()
    package = Path(registry.__file__).parent
    assert sorted(sources) == sorted([*package.glob("*.py"), package.parent / "augment_replay.py"])
    assert module_hash == registry.source_hash(sources)
    write_shards(tmp_path / "shards", n_shards=1, per_shard=1)
    builder = load_dataset_builder("datacompdr", data_files=str(tmp_path / "shards" / "*.tar"), teachers=TEACHERS,
                                   cache_dir=str(tmp_path / "cache"))
    assert builder.hash == module_hash and Path(builder.cache_dir).name == module_hash

    copies = []
    for source in sources:
        copy = tmp_path / "copies" / source.parent.name / source.name
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
        copies.append(copy)
    assert registry.source_hash(copies) == module_hash
    for copy in copies:
        original = copy.read_text(encoding="utf-8")
        copy.write_text(original + "\nEDITED = True\n", encoding="utf-8")
        assert registry.source_hash(copies) != module_hash, copy
        copy.write_text(original, encoding="utf-8")


def _documented_errors() -> list[tuple[str, str]]:
    """(exception type, message regex) of each row of docs/datacompdr.md's "Without the import" table."""
    docs = (Path(__file__).resolve().parents[1] / "docs" / "datacompdr.md").read_text()
    section = docs.split("### Without the import", 1)[1].split("\n#", 1)[0]
    assert "run `import dataset_scripts` before `load_dataset`" in section.replace("\n", " ")
    rows = []
    for line in section.splitlines():
        if line.startswith("| `"):
            kind, _, message = line.split("`")[1].partition(": ")
            rows.append((kind, re.escape(message).replace(re.escape("<hash>"), "[0-9a-f]+")))
    return rows


def test_without_the_import_datasets_raises_the_documented_errors(tmp_path, monkeypatch):
    """datasets 5.2 has no plugin hook, so without `import dataset_scripts` the name is unknown: each error datasets
    then raises (offline, online, and with a prepared set in the cache) is quoted in the docs next to the fix."""
    from fake_hub import FakeHub

    write_shards(tmp_path / "shards", n_shards=1, per_shard=2)
    files, cache = str(tmp_path / "shards" / "*.tar"), str(tmp_path / "cache")
    assert len(load_dataset("datacompdr", data_files=files, split="train", cache_dir=cache)) == 2  # with the import
    # What a program that never imported dataset_scripts sees: datasets' own table without the name.
    monkeypatch.delitem(datasets.packaged_modules._PACKAGED_DATASETS_MODULES, "datacompdr")
    documented = _documented_errors()
    seen = []
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    for cache_dir in (str(tmp_path / "empty-cache"), cache):
        with pytest.raises(Exception) as err:
            load_dataset("datacompdr", data_files=files, split="train", cache_dir=cache_dir)
        seen.append(err.value)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    with FakeHub().install(cache_dir=tmp_path / "hub-cache"):
        with pytest.raises(Exception) as err:
            load_dataset("datacompdr", data_files=files, split="train", cache_dir=str(tmp_path / "empty-cache"))
        seen.append(err.value)
    assert len(documented) == len(seen) == 3
    for error in seen:
        assert any(type(error).__name__ == kind and re.match(pattern, str(error)) for kind, pattern in documented), (
            f"{type(error).__name__}: {error} is not in docs/datacompdr.md's 'Without the import' table")
