"""Decoding of dataset image and label files, with one clear exception for every way a file can be bad.

Why not PIL everywhere: PIL (and imageio's default plugin) silently truncate 16-bit RGB PNGs, such as
SYNTHIA's labels, to 8 bits, and OpenCV decodes 8-bit colour PNGs about 1.5x faster. Why not OpenCV
everywhere: it expands palette PNGs (GTA5's labels) to colours, losing the indices that are the label ids. So
colour images and 16-bit labels go through OpenCV, 8-bit labels through PIL. Truncated files raise: PIL's
LOAD_TRUNCATED_IMAGES (which the reference sets) is left off, OpenCV returns no image for a truncated PNG, and
a JPEG must end with its end-of-image marker (OpenCV decodes a truncated JPEG with grey where the data stop,
and only warns).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image


class DatasetError(Exception):
    """A dataset folder or file is missing, unreadable or holds values it may not; the message names it."""


def require_file(path: Path) -> None:
    """Raise DatasetError unless `path` is an existing file."""
    if not path.is_file():
        raise DatasetError(f"missing file: {path}")


def read_rgb(path: Path) -> np.ndarray:
    """Colour image `(H, W, 3)` uint8 in RGB order; grey, palette and alpha images are converted.

    EXIF orientation is ignored, as by PIL (the reference's reader), so images stay aligned with their labels.
    """
    require_file(path)
    data = np.fromfile(path, dtype=np.uint8)  # (N,) the file's bytes
    if _is_truncated_jpeg(data):
        raise DatasetError(f"cannot decode image (truncated JPEG: no end-of-image marker): {path}")
    bgr = (
        cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) if data.size else None
    )  # (H, W, 3)
    if bgr is None:
        raise DatasetError(f"cannot decode image (truncated or not an image): {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _is_truncated_jpeg(data: np.ndarray) -> bool:
    """Whether `data` (a file's bytes) is a JPEG stream that does not end with the EOI marker FF D9 (padding
    zero bytes after it are allowed)."""
    if bytes(data[:3]) != b"\xff\xd8\xff":
        return False
    return not bytes(data[-4096:]).rstrip(b"\x00").endswith(b"\xff\xd9")


def read_label_ids_8bit(path: Path) -> np.ndarray:
    """Label ids `(H, W)` uint8 from a grey or palette PNG (a palette PNG's indices are the ids)."""
    require_file(path)
    try:
        with Image.open(path) as label:
            if label.mode not in ("L", "P"):
                raise DatasetError(
                    f"label image must have one 8-bit channel of ids (mode L or P), got mode {label.mode}:"
                    f" {path}"
                )
            return np.array(label)  # (H, W)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise DatasetError(f"cannot decode label image ({error}): {path}") from error


def read_label_ids_first_channel(path: Path) -> np.ndarray:
    """Label ids `(H, W)` from the first (red) channel of a colour PNG of 8 or 16 bits, e.g. SYNTHIA's labels.

    OpenCV orders channels B, G, R(, A), so the PNG's first channel is index 2 of its array.
    """
    require_file(path)
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # (H, W, 3 or 4), uint8 or uint16
    if pixels is None:
        raise DatasetError(f"cannot decode label image (truncated or not an image): {path}")
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise DatasetError(f"label image must have 3 or 4 channels, got shape {pixels.shape}: {path}")
    return np.ascontiguousarray(pixels[:, :, 2])
