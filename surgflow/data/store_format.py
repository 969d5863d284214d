"""The prepared store's on-disk format, in one place: `prepare` encodes with it, `store` decodes.

Per-video folder (storage STORAGE, chosen by benchmarks/bench_prepare.py):
    frames.bin   concatenated JPEG images (RGB, quality JPEG_QUALITY)
    index.npy    int64 [N + 1] byte offsets of the images in frames.bin
    phase.npy    int64 [N] phase ids (-1 = no label)
    tools.npy    float32 [N, K] tool presence (only when the layout has tool labels)
    meta.json    copy of the manifest entry (informative)
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image

FORMAT_VERSION = 1
STORAGE = "jpeg_packed"
JPEG_QUALITY = 90
DATA_FILES = ("frames.bin", "index.npy", "phase.npy", "tools.npy")
MANIFEST = "manifest.json"


def encode_jpeg(img: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """RGB uint8 [H, W, 3] -> JPEG bytes exactly as the store writes them."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def decode_jpeg(data) -> np.ndarray:
    """JPEG bytes -> uint8 [H, W, 3] RGB (raises OSError/ValueError on corrupt data)."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()  # decode now: a truncated image fails here, not later
        if img.mode != "RGB":
            img = img.convert("RGB")
        return np.asarray(img)


def roundtrip(img: np.ndarray) -> np.ndarray:
    """A frame as the store gives it back (JPEG encode + decode): online predict uses it so the
    model sees the frames `surgflow eval` reads (bit-identical)."""
    return decode_jpeg(encode_jpeg(img, JPEG_QUALITY))


def video_checksum(folder) -> str:
    """sha256 over the stored frames and labels (file names included, meta.json excluded)."""
    h = hashlib.sha256()
    for name in DATA_FILES:
        p = Path(folder) / name
        if not p.exists():
            continue
        h.update(name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return "sha256:" + h.hexdigest()
