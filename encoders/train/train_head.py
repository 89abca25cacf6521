#!/usr/bin/env python3
"""v3: train the image head (on cached backbone features) and the text head, then compare with v2.

The image tower is the frozen EfficientNet-Lite0 (backbone.py) whose pooled features are cached by
features.py; only a head 1280 -> 256 is trained, jointly with the text head on frozen MiniLM
caption embeddings, with train.py's Matryoshka loss (InfoNCE on the 256-d vector + on its
normalised 64-d prefix). Because features are cached, a step costs two small MLPs.

Evaluation, text->image and image->text R@1/5/10 with evaluate.metrics (1,000 candidates each):
  * test:    the held-out split of prepare_data.py --v3-npm (never trained on)
  * unseen:  the held-out art style (split "unseen", sources_v3.UNSEEN_STYLE_SET)
  * twemoji: 1,000 emoji of npm emoji-datasource-twitter, an evaluation-only set (reserved:
             it is read here and nowhere in the training data path)
each for v3 and for the bundled v2 model (encoders/models/default) on the same images/captions.
"""
import argparse
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402
import evaluate as E  # noqa: E402
from backbone import FEATURE_DIM, ort_session  # noqa: E402
from features import image_features, read_pairs  # noqa: E402
from train import info_nce, log, minilm_embed  # noqa: E402

N_EVAL = 1000
N_VAL = 400


class ImageHead(nn.Module):
    """Backbone features -> 256-d (MLP plus a linear skip, like common.TextHead)."""

    def __init__(self, din=FEATURE_DIM, dim=C.FINE_DIM):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(din, 1024), nn.GELU(), nn.Dropout(0.1), nn.Linear(1024, dim))
        self.skip = nn.Linear(din, dim)

    def forward(self, f):
        return self.mlp(f) + self.skip(f)  # unnormalised


def caption_embeddings(pairs, work):
    """{text: frozen MiniLM embedding} of every caption variant; texts already in
    <work>/text_emb.npz are reused, so only new captions are embedded."""
    path = os.path.join(work, "text_emb.npz")
    known = {}
    if os.path.exists(path):
        with np.load(path, allow_pickle=False) as z:
            known = dict(zip(z["texts"].tolist(), z["emb"]))
    texts = sorted({v for p in pairs for v in p["variants"]} | {p["caption"] for p in pairs})
    todo = [t for t in texts if t not in known]
    if todo:
        log("embedding", len(todo), "new caption variants with MiniLM")
        known.update(zip(todo, minilm_embed(todo)))
        np.savez(path, texts=np.array(list(known)), emb=np.stack(list(known.values())))
    return known


def matryoshka_loss(zt, zi, scale):
    fine = info_nce(F.normalize(zt, dim=-1), F.normalize(zi, dim=-1), scale[0])
    coarse = info_nce(F.normalize(zt[:, :C.COARSE_DIM], dim=-1), F.normalize(zi[:, :C.COARSE_DIM], dim=-1), scale[1])
    return fine + coarse


def train_heads(feats, var_emb, train_idx, minutes, batch, lr, feat_mean, feat_std):
    img_head, txt_head = ImageHead(), C.TextHead()
    log_scale = nn.Parameter(torch.full((2,), math.log(1 / 0.05)))
    params = list(img_head.parameters()) + list(txt_head.parameters())
    decay = [p for p in params if p.dim() > 1]
    no_decay = [p for p in params if p.dim() <= 1] + [log_scale]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    x_all = (feats - feat_mean) / feat_std
    t0, step, epoch = time.time(), 0, 0
    budget = minutes * 60
    while True:
        epoch += 1
        perm = torch.tensor(train_idx)[torch.randperm(len(train_idx))]
        for s in range(0, len(perm) - batch + 1, batch):
            p = (time.time() - t0) / budget
            if p >= 1:
                return img_head.eval(), txt_head.eval(), {"epochs": epoch, "steps": step, "minutes": minutes}
            for g in opt.param_groups:
                g["lr"] = lr * min(1.0, p / 0.03) * 0.5 * (1 + math.cos(math.pi * p))
            idx = perm[s:s + batch]
            x = x_all[idx]
            x = x + 0.1 * torch.randn_like(x)  # features are cached without image augmentation
            te = torch.stack([var_emb[i][random.randrange(len(var_emb[i]))] for i in idx.tolist()])
            loss = matryoshka_loss(txt_head(te), img_head(x), log_scale.exp().clamp(max=100))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % 100 == 0:
                log(f"ep {epoch} step {step} p {p:.2f} loss {loss.item():.3f}")


@torch.no_grad()
def v3_embed(img_head, txt_head, feats, cap_emb, feat_mean, feat_std):
    zi = F.normalize(img_head((feats - feat_mean) / feat_std), dim=-1).numpy()
    zt = F.normalize(txt_head(cap_emb), dim=-1).numpy()
    return zt, zi


def twemoji_set(package_dir, n, seed):
    """(image paths, captions) of n emoji of emoji-datasource-twitter (eval only)."""
    data = json.load(open(os.path.join(package_dir, "emoji.json"), encoding="utf-8"))
    rows = sorted((e["name"].lower(), os.path.join(package_dir, "img", "twitter", "64", e["image"]))
                  for e in data if e.get("has_img_twitter") and e.get("name"))
    seen, uniq = set(), []
    for cap, path in rows:
        if cap not in seen and os.path.exists(path):
            seen.add(cap)
            uniq.append((cap, path))
    random.Random(seed).shuffle(uniq)
    uniq = uniq[:n]
    return [p for _, p in uniq], [c for c, _ in uniq]


def v2_metrics(bundle, paths, captions):
    img_s = E.session(os.path.join(bundle, "image.onnx"))
    txt_s = E.session(os.path.join(bundle, "text.onnx"))
    return E.metrics(E.encode_texts(txt_s, captions), E.encode_images(img_s, paths))


def t2i_r10(m):
    return {k: v["R@10"] for k, v in m["text_to_image"].items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="encoders/train/work/rendered-v3")
    ap.add_argument("--features", default="encoders/train/work/features192.npz")
    ap.add_argument("--onnx", default="encoders/train/work/backbone192.onnx")
    ap.add_argument("--work", default="encoders/train/work/v3")
    ap.add_argument("--bundle", default="encoders/models/default", help="v2 bundle, for comparison")
    ap.add_argument("--twemoji", default=None, help="unpacked npm emoji-datasource-twitter package dir")
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(a.seed), random.seed(a.seed), np.random.seed(a.seed)
    os.makedirs(a.work, exist_ok=True)

    pairs = read_pairs(a.data)
    with np.load(a.features, allow_pickle=False) as z:
        if list(z["ids"]) != [p["id"] for p in pairs]:
            raise SystemExit(f"{a.features} is stale for {a.data}: rerun features.py")
        feats = torch.from_numpy(z["features"])
    tmap = caption_embeddings(pairs, a.work)
    var_emb = [torch.from_numpy(np.stack([tmap[v] for v in p["variants"]])) for p in pairs]
    cap_emb = torch.from_numpy(np.stack([tmap[p["caption"]] for p in pairs]))
    train_idx = [i for i, p in enumerate(pairs) if p["split"] == "train"]
    random.Random(1234).shuffle(train_idx)
    val_idx, train_idx = train_idx[:N_VAL], train_idx[N_VAL:]
    feat_mean = feats[train_idx].mean(0)
    feat_std = feats[train_idx].std(0).clamp(min=1e-3)
    log(f"train {len(train_idx)} val {len(val_idx)}")
    if len(train_idx) < a.batch:
        raise SystemExit(f"{len(train_idx)} training pairs are fewer than one batch ({a.batch})")
    img_head, txt_head, meta = train_heads(feats, var_emb, train_idx, a.minutes, a.batch, a.lr, feat_mean, feat_std)

    results = {"meta": meta}
    sets = {"val": val_idx,
            "test": [i for i, p in enumerate(pairs) if p["split"] == "test"][:N_EVAL],
            "unseen": [i for i, p in enumerate(pairs) if p["split"] == "unseen"][:N_EVAL]}
    for name, idx in sets.items():
        zt, zi = v3_embed(img_head, txt_head, feats[idx], cap_emb[idx], feat_mean, feat_std)
        results[name] = {"n": len(idx), "v3": E.metrics(zt, zi)}
        if name != "val":
            results[name]["v2"] = v2_metrics(a.bundle, [os.path.join(a.data, pairs[i]["image"]) for i in idx],
                                             [pairs[i]["caption"] for i in idx])
    if a.twemoji:
        paths, caps = twemoji_set(a.twemoji, N_EVAL, 20240601)
        tw_feats = torch.from_numpy(image_features(ort_session(a.onnx), paths, 32))
        zt, zi = v3_embed(img_head, txt_head, tw_feats, torch.from_numpy(minilm_embed(caps)), feat_mean, feat_std)
        results["twemoji"] = {"n": len(paths), "v3": E.metrics(zt, zi), "v2": v2_metrics(a.bundle, paths, caps)}
    torch.save({"image_head": img_head.state_dict(), "text_head": txt_head.state_dict(),
                "feat_mean": feat_mean, "feat_std": feat_std, "meta": meta}, os.path.join(a.work, "heads.pt"))
    json.dump(results, open(os.path.join(a.work, "metrics_v3.json"), "w"), indent=1)
    for name, r in results.items():
        if name != "meta":
            log(name, r["n"], "t2i R@10 v3", t2i_r10(r["v3"]), "v2", t2i_r10(r["v2"]) if "v2" in r else "-")


if __name__ == "__main__":
    sys.exit(main())
