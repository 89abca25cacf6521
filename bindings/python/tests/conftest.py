"""Shared fixtures: temporary databases, random vectors, and small real PNG images."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

import hivlp

REPO = Path(__file__).resolve().parents[3]
DEFAULT_BUNDLE = REPO / "encoders" / "models" / "default"

FINE_DIM = 48
COARSE_DIM = 12


def unit_rows(n, dim, seed=0):
    """`n` random float32 unit vectors."""
    rows = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def png_bytes(rgb, size=32, stripe=None):
    """A real PNG file: a solid `rgb` square, optionally with a horizontal stripe colour."""
    rows = []
    for y in range(size):
        colour = stripe if stripe is not None and size // 3 <= y < 2 * size // 3 else rgb
        rows.append(b"\x00" + bytes(colour) * size)
    raw = b"".join(rows)

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "db.hivlp"


@pytest.fixture
def vec_db(db_path):
    """A vectors-only database (no model), closed after the test."""
    db = hivlp.open(db_path, model=None, fine_dim=FINE_DIM, coarse_dim=COARSE_DIM)
    yield db
    db.close()


requires_model = pytest.mark.skipif(
    not (DEFAULT_BUNDLE / "model.toml").exists(),
    reason="the default model bundle (encoders/models/default) is not present",
)


@pytest.fixture
def images(tmp_path):
    """Four small PNG files with captions, written to a temporary folder."""
    specs = {
        "red.png": ((220, 30, 30), None, "a red square"),
        "blue.png": ((30, 30, 220), None, "a blue square"),
        "green.png": ((30, 200, 40), None, "a green square"),
        "flag.png": ((250, 250, 250), (200, 0, 0), "a white flag with a red stripe"),
    }
    folder = tmp_path / "images"
    folder.mkdir()
    paths, captions = [], []
    for name, (rgb, stripe, caption) in specs.items():
        path = folder / name
        path.write_bytes(png_bytes(rgb, stripe=stripe))
        paths.append(str(path))
        captions.append(caption)
    return paths, captions
