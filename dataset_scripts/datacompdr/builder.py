"""The ``datasets`` builder of DataCompDR / DFNDR shards: metadata, features, splits and the example generator.

``load_dataset("datacompdr", ...)`` imports this module (``registry`` registers its path) and builds the one
:class:`DataCompDR` class defined here; each step is a module of this package (configs, metadata, features, join
indexes, sample assembly, skip counting).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import Counter
from typing import Optional

import datasets
from datasets.builder import Key
from datasets.data_files import DataFilesDict

from .assemble import SampleAssembler
from .configs import DataCompDRConfig, named_configs
from .data_files import expand_data_files
from .features import build_features
from .join_index import CaptionIndex, ImageIndex, join_index_file, open_join_index
from .joins import SampleJoins
from .members import iter_raw_samples
from .shard_uids import ShardUidIndex, indexable_shards
from .metadata import METADATA_PREFIX, DataCompDRMetadata, Teacher, find_config_json, get_metadata, read_config_json
from .skips import DataCompDRSampleError, record_skip, record_yielded

logger = logging.getLogger(__name__)


class DataCompDR(datasets.GeneratorBasedBuilder):
    """DataCompDR / DFNDR reinforced shards with typed columns, optional image/caption joins and counted skips."""

    BUILDER_CONFIG_CLASS = DataCompDRConfig
    BUILDER_CONFIGS = named_configs()
    DEFAULT_CONFIG_NAME = "local"
    DEFAULT_WRITER_BATCH_SIZE = 100

    def __init__(self, *args, data_files=None, **kwargs):
        if data_files is not None and not isinstance(data_files, DataFilesDict):
            data_files = expand_data_files(data_files)
        self.metadata: Optional[DataCompDRMetadata] = None
        super().__init__(*args, data_files=data_files, **kwargs)

    # ---- metadata
    def _resolve_metadata(self) -> DataCompDRMetadata:
        """Config defaults, overridden by config.json, overridden by the user's keywords (``teachers=`` ...)."""
        config = self.config
        names = ("teachers", "num_augmentations", "augmentation", "layout", "embedding_format",
                 "syn_text_key_regex", "embedding_source_dtype")
        values = {name: getattr(config, name) for name in names}
        values["seed"], values["num_captions"], source = None, None, f"builder config {config.name!r}"
        path = find_config_json(config.data_files) if config.read_config_json else None
        if path is not None:
            user_given = set(self.config_kwargs)
            values.update({k: v for k, v in read_config_json(path, config.teachers).items() if k not in user_given})
            source = path
        teachers = tuple(Teacher.from_dict(t, source) for t in values.pop("teachers") or ())
        return DataCompDRMetadata(teachers=teachers, source=source, **values)

    def _describe(self) -> str:
        return f"{self.config.description or 'DataCompDR-layout shards'}\n{METADATA_PREFIX}{self.metadata.to_json()}"

    def _features(self) -> datasets.Features:
        return build_features(self.metadata.total_dim, self.config.captions is not None,
                              self.config.image_dir is not None)

    def _info(self) -> datasets.DatasetInfo:
        self.config.validate()
        self.metadata = self._resolve_metadata()
        info = datasets.DatasetInfo(
            description=self.config.description or "",
            homepage=f"https://huggingface.co/datasets/{self.config.hub_repo}" if self.config.hub_repo else "",
            license="DataCompDR: apple-amlr; DFNDR: cc-by-nc-nd-4.0 (non-commercial research only)"
            if self.config.hub_repo else "",
        )
        if self.metadata.teachers:  # else ('local' data, no metadata): inferred in _split_generators
            info.description, info.features = self._describe(), self._features()
        return info

    def _infer_teachers(self, tar_paths: list[str], download_config) -> None:
        """No metadata anywhere: D_total from the first sample that decodes; the per-teacher split is unknown."""
        assembler = SampleAssembler(self.metadata, self.config.image_emb_key, None)
        no_joins = SampleJoins(self.config, None, None)
        for tar_path in tar_paths:
            for raw in iter_raw_samples(tar_path, download_config):
                try:
                    example = assembler(raw, tar_path, no_joins)
                except DataCompDRSampleError:
                    continue
                dim = int(example["image_emb"].shape[1])
                logger.warning("datacompdr: no teachers= and no config.json next to the shards; D_total=%d inferred "
                               "from %s, per-teacher split unknown", dim, tar_path)
                self.metadata = dataclasses.replace(self.metadata, teachers=(Teacher("unknown", None, dim),),
                                                    source=f"inferred from {tar_path}")
                return
        raise ValueError(f"no valid DataCompDR sample in {tar_paths} to infer the embedding width from; pass "
                         f"teachers=[{{'model': ..., 'embedding_dim': ...}}, ...]")

    # ---- generation
    def _split_generators(self, dl_manager):
        if not self.config.data_files:
            raise ValueError(
                f"config {self.config.name!r} has no data files; pass data_files= (e.g. "
                f"data_files='shards/{{00000..00015}}.tar') or choose one of the Hub configs "
                f"{[c.name for c in self.BUILDER_CONFIGS if c.data_files]}"
            )
        # The join indexes are built here, once (the main process of each rank; the others wait on a file lock), and
        # memory-mapped by every generator process; a wrong path fails now, not at the first sample.
        join_indexes = {
            f"{what}_index": None if spec is None else join_index_file(kind, spec, what, self._cache_dir_root)
            for kind, spec, what in ((CaptionIndex, self.config.captions, "captions"),
                                     (ImageIndex, self.config.image_dir, "image_dir"))
        }
        data_files = dl_manager.download(self.config.data_files)
        download_config = dl_manager.download_config
        if self.info.features is None:
            if self.metadata is None or not self.metadata.teachers:
                self.metadata = self.metadata or self._resolve_metadata()
                self._infer_teachers(list(next(iter(data_files.values()))), download_config)
            self.info.features, self.info.description = self._features(), self._describe()
        elif self.metadata is None:  # restored from a prepared cache: the description carries the metadata
            self.metadata = get_metadata(self.info)
        return [
            # Only the shard list is a list: datasets shards gen_kwargs over lists (split_dataset_by_node, workers).
            datasets.SplitGenerator(name=split, gen_kwargs={"tar_paths": list(paths),
                                                            "download_config": download_config, **join_indexes,
                                                            "uids_index": self._uids_index(list(paths))})
            for split, paths in data_files.items()
        ]

    def _uids_index(self, tar_paths: list[str]) -> str | None:
        """The uid index of one split's shards (built once, like the join indexes), or None (off / not indexable)."""
        shards = indexable_shards(tar_paths) if self.config.dedupe_uids else None
        return None if shards is None else join_index_file(ShardUidIndex, shards, "data_files", self._cache_dir_root)

    def _generate_shards(self, tar_paths, download_config, captions_index, image_dir_index, uids_index):
        yield from tar_paths

    def _generate_examples(self, tar_paths, download_config, captions_index, image_dir_index, uids_index):
        total_dim = self.info.features["image_emb"].shape[1]
        assembler = SampleAssembler(self.metadata or get_metadata(self.info), self.config.image_emb_key, total_dim)
        joins = SampleJoins(self.config, captions_index, image_dir_index)
        uids = None if uids_index is None else open_join_index(ShardUidIndex, uids_index)
        for shard_idx, tar_path in enumerate(tar_paths):
            shard_counts: Counter = Counter()
            yielded = 0
            for example_idx, raw in enumerate(iter_raw_samples(tar_path, download_config)):
                try:
                    example = assembler(raw, tar_path, joins)
                    if uids is not None:
                        _check_repeats(uids, example["uid"], raw, tar_path, assembler)
                except DataCompDRSampleError as err:
                    if self.config.strict:
                        raise
                    record_skip(err, shard_counts)
                    continue
                record_yielded()
                yielded += 1
                yield Key(shard_idx, example_idx), example
            skipped = sum(shard_counts.values())
            # INFO: the skips themselves are summarised at WARNING by skips.record_skip (a few examples, running
            # counts), not once per shard.
            logger.info("datacompdr: shard %s: yielded %d, skipped %d%s", tar_path, yielded, skipped,
                        f" {dict(shard_counts)}" if skipped else "")


def _check_repeats(uids: ShardUidIndex, uid: str, raw, tar_path: str, assembler: SampleAssembler) -> None:
    """``duplicate_uid`` unless this sample is the one the shard index keeps for its uid (see :mod:`.shard_uids`)."""
    first = uids.first_sample(uid)
    if first is None:  # no uid-shaped key and no json uid, or past damage the index scan stopped at
        return
    path, offset, ambiguous = first
    if ambiguous:
        assembler.fail("duplicate_uid", "json", raw, tar_path, f"uid {uid} is carried by several samples of the "
                       "shards with different bytes; deduplicate the shards")
    if (path, offset) != (os.path.abspath(tar_path), raw.offset):
        assembler.fail("duplicate_uid", "json", raw, tar_path, f"an identical copy of this sample (uid {uid}) at "
                       f"offset {offset} of {path} is yielded instead")
