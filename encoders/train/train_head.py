#!/usr/bin/env python3
"""Train the v3 heads: the image head (on cached backbone features) and the text head.

The image tower is the frozen EfficientNet-Lite0 (backbone.py) whose pooled features are cached by
features.py; only a head 1280 -> 256 (ImageHead, with its ImageNet prior) is trained, jointly with
the text head on frozen MiniLM caption embeddings, with the Matryoshka loss (InfoNCE on the
256-d vector + on its normalised 64-d prefix). Because features are cached, a step costs a few
small matrix products. Hyperparameters are chosen on a caption-disjoint validation split of the
train split (caption_disjoint_split), never on an evaluation set.

Evaluation, text->image and image->text R@1/5/10 with evaluate.metrics (1,000 candidates each):
  * val:     the validation split (the only set used to choose settings)
  * test:    the held-out split of prepare_data.py --v3-npm (never trained on)
  * unseen:  the held-out art style (split "unseen", sources_v3.UNSEEN_STYLE_SET)
  * twemoji: 1,000 emoji of npm emoji-datasource-twitter, an evaluation-only set (reserved:
             it is read here and nowhere in the training data path)
  * photos:  the held-out photo set (photos.tsv)
each for v3 and for the v2 bundle (--bundle) on the same images/captions.
"""
import argparse
import collections
import json
import math
import os
import random
import re
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402
import evaluate as E  # noqa: E402
from backbone import FEATURE_DIM, load_pretrained, ort_session  # noqa: E402
from features import image_features, read_pairs  # noqa: E402

N_EVAL = 1000
N_VAL = 400


class ImageHead(nn.Module):
    """Raw pooled backbone features -> 256-d, unnormalised: standardised features through an MLP
    plus a linear skip (like common.TextHead), and, with `prior`, the caption-space vector of
    what the backbone's own ImageNet classifier sees: the softmax over its 1,000 classes weights
    the MiniLM embeddings of their names, and a copy of the text head (trained jointly, weights
    shared) maps that mixture into caption space. A photograph then lands near captions through
    ImageNet's labels, which the clip-art pairs alone cannot teach."""

    def __init__(self, feat_mean, feat_std, prior=None, dropout=0.1, din=FEATURE_DIM, dim=C.FINE_DIM):
        super().__init__()
        self.register_buffer("feat_mean", feat_mean)
        self.register_buffer("feat_std", feat_std)
        self.mlp = nn.Sequential(nn.Linear(din, 1024), nn.GELU(), nn.Dropout(dropout), nn.Linear(1024, dim))
        self.skip = nn.Linear(din, dim)
        self.prior = prior is not None
        if self.prior:
            weight, bias, class_emb, text_head = prior
            self.classifier = nn.Linear(din, weight.shape[0])
            self.classifier.load_state_dict({"weight": weight, "bias": bias})
            self.classifier.requires_grad_(False)
            self.register_buffer("class_emb", class_emb)
            self.text_head = text_head  # shared with the text tower while training
            self.prior_gain = nn.Parameter(torch.ones(()))

    @classmethod
    def from_state(cls, state):
        """The head saved in heads.pt (with its prior where it was trained with one)."""
        prior = None
        if "classifier.weight" in state:
            prior = (state["classifier.weight"], state["classifier.bias"], state["class_emb"], C.TextHead())
        head = cls(state["feat_mean"], state["feat_std"], prior)
        head.load_state_dict(state)
        return head.eval()

    def forward(self, f, noise=0.0):
        x = (f - self.feat_mean) / self.feat_std
        if noise:
            x = x + noise * torch.randn_like(x)  # features are cached without image augmentation
        z = self.mlp(x) + self.skip(x)
        if self.prior:
            probs = F.softmax(self.classifier(x * self.feat_std + self.feat_mean), dim=-1)
            z = z + self.prior_gain * self.text_head(F.normalize(probs @ self.class_emb, dim=-1))
        return z


def imagenet_prior(size):
    """(classifier weight, bias, MiniLM embedding of "a photo of a <class>" per ImageNet class).
    Class names: timm's imagenet_synsets.txt (the classifier's order) and the first lemma of
    each synset in imagenet_synset_to_lemma.txt (timm is installed with --no-deps; only these
    two text files are read)."""
    import importlib.util
    # find_spec locates the package without importing it (timm's import needs torchvision)
    info = os.path.join(importlib.util.find_spec("timm").submodule_search_locations[0], "data", "_info")
    synsets = open(os.path.join(info, "imagenet_synsets.txt")).read().split()
    lemma = dict(line.rstrip("\n").split("\t", 1) for line in open(os.path.join(info, "imagenet_synset_to_lemma.txt")))
    names = [lemma[s].split(",")[0].strip() for s in synsets]
    fc = load_pretrained(size)._fc
    class_emb = torch.from_numpy(C.minilm_embed([f"a photo of a {n}" for n in names]))
    return fc.weight.detach().clone(), fc.bias.detach().clone(), class_emb


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
        C.log("embedding", len(todo), "new caption variants with MiniLM")
        known.update(zip(todo, C.minilm_embed(todo)))
        np.savez(path, texts=np.array(list(known)), emb=np.stack(list(known.values())))
    return known


def caption_disjoint_split(pairs, idx, n):
    """(~n validation pairs, the rest) of the train split, no caption on both sides: the test
    split's captions are unseen in training, so a validation set that shares captions with
    training (in another art style) would reward memorising captions."""
    groups = collections.defaultdict(list)
    for i in idx:
        groups[re.sub(r"[^a-z0-9]+", " ", pairs[i]["caption"].lower()).strip()].append(i)
    keys = sorted(groups)
    random.Random(1234).shuffle(keys)
    val = []
    for k in keys:
        if len(val) >= n:
            break
        val += groups[k]
    held = set(val)
    return val, [i for i in idx if i not in held]


def matryoshka_loss(zt, zi, scale):
    fine = C.info_nce(F.normalize(zt, dim=-1), F.normalize(zi, dim=-1), scale[0])
    coarse = C.info_nce(F.normalize(zt[:, :C.COARSE_DIM], dim=-1), F.normalize(zi[:, :C.COARSE_DIM], dim=-1), scale[1])
    return fine + coarse


def train_heads(feats, var_emb, train_idx, a, feat_mean, feat_std, prior=None):
    minutes, batch, lr = a.minutes, a.batch, a.lr
    txt_head = C.TextHead()
    img_head = ImageHead(feat_mean, feat_std, prior + (txt_head,) if prior else None, a.dropout)
    log_scale = nn.Parameter(torch.full((2,), math.log(1 / 0.05)))
    params = list({id(p): p for p in list(img_head.parameters()) + list(txt_head.parameters())
                   if p.requires_grad}.values())
    decay = [p for p in params if p.dim() > 1]
    no_decay = [p for p in params if p.dim() <= 1] + [log_scale]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    t0, step, epoch = time.time(), 0, 0
    budget = minutes * 60
    while True:
        epoch += 1
        perm = torch.tensor(train_idx)[torch.randperm(len(train_idx))]
        for s in range(0, len(perm) - batch + 1, batch):
            p = (time.time() - t0) / budget
            if p >= 1:
                meta = {"epochs": epoch, "steps": step, "minutes": minutes, "prior": prior is not None,
                        "lr": lr, "batch": batch, "dropout": a.dropout, "noise": a.noise, "wd": a.wd}
                return img_head.eval(), txt_head.eval(), meta
            for g in opt.param_groups:
                g["lr"] = lr * min(1.0, p / 0.03) * 0.5 * (1 + math.cos(math.pi * p))
            idx = perm[s:s + batch]
            te = torch.stack([var_emb[i][random.randrange(len(var_emb[i]))] for i in idx.tolist()])
            loss = matryoshka_loss(txt_head(te), img_head(feats[idx], noise=a.noise), log_scale.exp().clamp(max=100))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % 100 == 0:
                C.log(f"ep {epoch} step {step} p {p:.2f} loss {loss.item():.3f}")


@torch.no_grad()
def v3_embed(img_head, txt_head, feats, cap_emb):
    zi = F.normalize(img_head(feats), dim=-1).numpy()
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


def photo_set(root, listing=os.path.join(os.path.dirname(os.path.abspath(__file__)), "photos.tsv")):
    """(image paths, captions) of the held-out photo set (photos.tsv) under `root`, where
    train.sh unpacks its Debian packages. Evaluation only."""
    rows = [line.rstrip("\n").split("\t") for line in open(listing, encoding="utf-8") if not line.startswith("#")]
    return [os.path.join(root, r[1]) for r in rows], [r[2] for r in rows]


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
    ap.add_argument("--photos", default=None, help="where train.sh unpacked the photo set's Debian packages")
    ap.add_argument("--prior", action="store_true", help="add the ImageNet-classifier prior (ImageHead)")
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dropout", type=float, default=0.1, help="in the image head's MLP")
    ap.add_argument("--noise", type=float, default=0.1, help="Gaussian noise on standardised features")
    ap.add_argument("--wd", type=float, default=0.05, help="AdamW weight decay")
    ap.add_argument("--no-compare", action="store_true", help="skip the v2 and extra-set evaluations")
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
    val_idx, train_idx = caption_disjoint_split(pairs, train_idx, N_VAL)
    feat_mean = feats[train_idx].mean(0)
    feat_std = feats[train_idx].std(0).clamp(min=1e-3)
    C.log(f"train {len(train_idx)} val {len(val_idx)}")
    if len(train_idx) < a.batch:
        raise SystemExit(f"{len(train_idx)} training pairs are fewer than one batch ({a.batch})")
    prior = imagenet_prior(int(ort_session(a.onnx).get_inputs()[0].shape[2])) if a.prior else None
    img_head, txt_head, meta = train_heads(feats, var_emb, train_idx, a, feat_mean, feat_std, prior)

    results = {"meta": meta}
    sets = {"val": val_idx,
            "test": [i for i, p in enumerate(pairs) if p["split"] == "test"][:N_EVAL],
            "unseen": [i for i, p in enumerate(pairs) if p["split"] == "unseen"][:N_EVAL]}
    for name, idx in sets.items():
        zt, zi = v3_embed(img_head, txt_head, feats[idx], cap_emb[idx])
        results[name] = {"n": len(idx), "v3": E.metrics(zt, zi)}
        if name != "val" and not a.no_compare:
            results[name]["v2"] = v2_metrics(a.bundle, [os.path.join(a.data, pairs[i]["image"]) for i in idx],
                                             [pairs[i]["caption"] for i in idx])
    extra = {}
    if a.twemoji and not a.no_compare:
        extra["twemoji"] = twemoji_set(a.twemoji, N_EVAL, 20240601)
    if a.photos and not a.no_compare:
        extra["photos"] = photo_set(a.photos)
    for name, (paths, caps) in extra.items():
        set_feats = torch.from_numpy(image_features(ort_session(a.onnx), paths, 32))
        zt, zi = v3_embed(img_head, txt_head, set_feats, torch.from_numpy(C.minilm_embed(caps)))
        results[name] = {"n": len(paths), "v3": E.metrics(zt, zi), "v2": v2_metrics(a.bundle, paths, caps)}
    torch.save({"image_head": img_head.state_dict(), "text_head": txt_head.state_dict(), "meta": meta},
               os.path.join(a.work, "heads.pt"))
    json.dump(results, open(os.path.join(a.work, "metrics_v3.json"), "w"), indent=1)
    for name, r in results.items():
        if name != "meta":
            C.log(name, r["n"], "t2i R@10 v3", t2i_r10(r["v3"]), "v2", t2i_r10(r["v2"]) if "v2" in r else "-")


if __name__ == "__main__":
    sys.exit(main())
