"""Where the images come from: a folder (recursively: jpg, jpeg, png, webp) or a `datasets` image dataset, as one
indexable source of `(id, image)` whose decoding runs in DataLoader workers; an unreadable image is a counted skip.

    source = image_source("photos/")                          # ids: paths relative to the folder, sorted
    source = image_source("imagenet-val/", image_column=None)   # imagefolder / save_to_disk / parquet / hub id
    source = image_source(datasets.load_dataset(...)["test"])   # any Dataset with an Image column; ids: row index
"""

import io
from dataclasses import dataclass
from pathlib import Path

import PIL.Image
import torch

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


@dataclass
class Decoded:
    """One item: its id and the RGB image, or why it could not be read."""

    id: str
    image: PIL.Image.Image | None
    error: str | None = None


def _decode(read, item_id: str) -> Decoded:
    try:
        image = read()
        image.load()
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as err:  # PIL's errors for a damaged file
        return Decoded(item_id, None, f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err) else ''}")
    return Decoded(item_id, image if image.mode == "RGB" else image.convert("RGB"))


class FolderImages(torch.utils.data.Dataset):
    """Every image file under `root` (recursively, sorted by relative path); ids are the relative paths."""

    def __init__(self, root: str | Path, flag: str = "--images"):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"{flag} {str(root)!r} is not a folder; pass a folder of images or a dataset.")
        self.paths = sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*")
                            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.paths:
            raise ValueError(f"{flag} {str(root)!r} holds no {'/'.join(s[1:] for s in IMAGE_SUFFIXES)} files (searched "
                             f"recursively); pass the folder that holds the images.")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Decoded:
        path = self.paths[index]
        return _decode(lambda: PIL.Image.open(self.root / path), path)


class DatasetImages(torch.utils.data.Dataset):
    """The `image_column` of a `datasets.Dataset`, decoded in the worker (a damaged row is a skip, not a crash);
    ids are the row indices, or the values of `id_column`."""

    def __init__(self, dataset, image_column: str, id_column: str | None = None):
        import datasets

        if len(dataset) == 0:
            raise ValueError("the image dataset has no rows; pass a dataset (or split) that holds images.")
        self.ids = [str(i) for i in (dataset[id_column] if id_column else range(len(dataset)))]
        # Undecoded bytes travel to the workers, which decode them: a damaged image is a counted skip there.
        self.dataset = dataset.select_columns([image_column]).cast_column(image_column, datasets.Image(decode=False))
        self.column = image_column

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Decoded:
        value = self.dataset[index][self.column]

        def read():
            if value is None:
                raise ValueError("the row has no image")
            if value.get("bytes"):
                return PIL.Image.open(io.BytesIO(value["bytes"]))
            return PIL.Image.open(value["path"])

        return _decode(read, self.ids[index])


def image_source(images, image_column: str | None = None, id_column: str | None = None,
                 flag: str = "--images") -> torch.utils.data.Dataset:
    """`images`: a folder of image files, a dataset spec (save_to_disk folder, imagefolder with class folders is
    read as plain files, `.parquet`, hub id) or a `datasets.Dataset`; the image column is found from the features."""
    import datasets

    from ..evaluation.eval_dataset import load_eval_dataset, resolve_image_column

    if isinstance(images, datasets.Dataset):
        return DatasetImages(images, resolve_image_column(images, image_column, "the dataset"), id_column)
    spec = str(images)
    path = Path(spec)
    saved = (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()
    if path.is_dir() and not saved:
        return FolderImages(path, flag)
    dataset = load_eval_dataset(spec)
    return DatasetImages(dataset, resolve_image_column(dataset, image_column, spec), id_column)
