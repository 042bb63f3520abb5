"""Batch embedding for indexing: a folder or dataset of images (or a list of texts) -> safetensors shards + ids.

    python -m modeling_mobileclip.embedding --model mobileclip-s0 --images photos/ --output photos-emb/
    (also `mobileclip-embed`; options in `cli.py`)

    from modeling_mobileclip.embedding import embed_images, load_embeddings

    sources.py   the inputs: a folder (recursive) or a datasets image dataset; unreadable images are counted skips
    run.py       one run: DataLoader workers + the image processor, the fused model batched in inference mode
    shards.py    the output: shards written to a temporary name and renamed, index.json last, resume
    cli.py       the command line
"""

from .run import embed_images, embed_texts
from .shards import load_embeddings
from .sources import image_source

__all__ = ["embed_images", "embed_texts", "image_source", "load_embeddings"]
