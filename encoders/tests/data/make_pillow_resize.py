#!/usr/bin/env python3
"""Writes pillow_resize.json: Pillow's Image.resize of a pseudo-random RGB image, for the Rust
resampler's bit-exactness test (encoders/src/resample.rs). The source image is regenerated in
the test from the same LCG, so only digests of the outputs are stored. Needs Pillow; not run by the tests."""
import hashlib
import json
import os

import PIL
from PIL import Image

W, H = 41, 29


def source():
    state, out = 12345, bytearray()
    for _ in range(W * H * 3):
        state = (state * 1103515245 + 12345) % (1 << 31)
        out.append((state >> 16) & 255)
    return Image.frombytes("RGB", (W, H), bytes(out))


def main():
    im = source()
    cases = []
    for name, flt in [("nearest", Image.NEAREST), ("triangle", Image.BILINEAR), ("catmull_rom", Image.BICUBIC)]:
        for size in [(16, 11), (41, 13), (20, 29), (96, 68), (7, 50), (3, 2)]:
            out = im.resize(size, flt)
            cases.append({"interpolation": name, "width": size[0], "height": size[1], "sha256": hashlib.sha256(out.tobytes()).hexdigest()})
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pillow_resize.json")
    with open(path, "w") as f:
        json.dump({"pillow": PIL.__version__, "width": W, "height": H, "cases": cases}, f, indent=1)


if __name__ == "__main__":
    main()
