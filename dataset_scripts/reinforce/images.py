"""Input images decoded exactly as the DataCompDR replay will decode them from the written shard."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Optional

import numpy as np
import PIL.Image

from ..augment_replay import load_image
from ..datacompdr.members import IMAGE_EXTENSIONS
from .inputs import BadSample


@dataclass
class PreparedImage:
    rgb: PIL.Image.Image  # exactly what load_image(stored_bytes) returns
    stored: bytes
    ext: str


def _to_8bit_rgb(img: PIL.Image.Image) -> PIL.Image.Image:
    """High bit-depth modes that PIL's RGBA->RGB path would clip (I;16, I, F): rescale to 8 bits, then RGB."""
    array = np.asarray(img)
    if img.mode.startswith("I;16") or (img.mode == "I" and array.max(initial=0) > 255):
        array = (array.astype(np.float64) / (65535.0 if array.max(initial=0) <= 65535 else array.max())) * 255.0
    elif img.mode == "F":
        low, high = float(np.nanmin(array)), float(np.nanmax(array))
        array = (array - low) / (high - low if high > low else 1.0) * 255.0 if high > 1.0 else array * 255.0
    return PIL.Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), "L").convert("RGB")


def prepare_image(data: Optional[bytes], ext_hint: Optional[str] = None) -> PreparedImage:
    """Decode an input image the way the DataCompDR replay will (no EXIF rotation; RGBA -> RGB for other modes).

    The original bytes are kept when ``augment_replay.load_image`` reproduces the pixels used here; otherwise a
    lossless PNG of those pixels is stored, so a replay from the shard always sees exactly the generator's image.
    """
    if data is None:
        raise BadSample("missing_image", "no image")
    if len(data) == 0:
        raise BadSample("empty_image", "zero-byte image")
    try:
        with PIL.Image.open(io.BytesIO(data)) as img:
            img.load()
            fmt = (img.format or "").lower()
            if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                rgb = _to_8bit_rgb(img)
                reencode = True
            else:
                rgb = load_image(img.copy() if img.mode == "RGB" else img)
                reencode = False
    except BadSample:
        raise
    except Exception as err:  # PIL raises many types on broken files; one broken image drops one sample
        raise BadSample("unreadable_image", f"{type(err).__name__}: {err}") from None
    ext = {"jpeg": "jpg", "tiff": "tif"}.get(fmt, fmt)
    if ext not in IMAGE_EXTENSIONS or getattr(img, "n_frames", 1) > 1:
        reencode = True  # a format the DataCompDR image join does not index, or an animation (frame 0 was used)
    if reencode:
        buffer = io.BytesIO()
        rgb.save(buffer, format="PNG")
        return PreparedImage(rgb, buffer.getvalue(), "png")
    return PreparedImage(rgb, data, ext)
