#!/usr/bin/env python3
"""Train the hivlp default dual encoder (small CNN image tower + frozen MiniLM with trained head).

Loss: Matryoshka / hierarchical InfoNCE = symmetric InfoNCE on the full 256-d embedding (fine)
+ symmetric InfoNCE on the L2-normalised first 64 dims (coarse).
Training length is a wall-clock budget (--minutes); the LR schedule and the progressive image
resolution (64 -> 80 -> 96 px) follow the fraction of the budget used.
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
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402

N_VAL = 400  # carved out of the train split for monitoring; never the test split


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def read_pairs(data):
    return [json.loads(l) for l in open(os.path.join(data, "pairs.jsonl"), encoding="utf-8")]


def image_cache(pairs, data, work):
    path = os.path.join(work, f"img{C.IMAGE_SIZE}.npy")
    ids_path = path + ".ids"
    ids = [p["id"] for p in pairs]
    if os.path.exists(path) and os.path.exists(ids_path) and open(ids_path).read().split() == ids:
        return np.load(path)
    log("building image cache", len(pairs))
    arr = np.stack([C.load_rgb(os.path.join(data, p["image"])) for p in pairs])
    np.save(path, arr)
    open(ids_path, "w").write("\n".join(ids))
    return arr


@torch.no_grad()
def minilm_embed(texts, bs=128):
    """Frozen MiniLM: mean pooling over attention mask, L2-normalised (384-d)."""
    from transformers import AutoModel
    model = AutoModel.from_pretrained(C.minilm_dir()).eval()
    tok = C.make_tokenizer()
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


def text_cache(pairs, work):
    path = os.path.join(work, "text_emb.npz")
    texts = sorted({v for p in pairs for v in p["variants"]} | {p["caption"] for p in pairs})
    if os.path.exists(path):
        z = np.load(path, allow_pickle=False)
        if list(z["texts"]) == texts:
            return dict(zip(texts, z["emb"]))
    log("embedding", len(texts), "caption variants with MiniLM")
    emb = minilm_embed(texts)
    np.savez(path, texts=np.array(texts), emb=emb)
    return dict(zip(texts, emb))


def augment(x_u8, res, flippable, train=True):
    """x_u8: uint8 [B,3,S,S] -> float normalised [B,3,res,res] with random resized crop + flips."""
    x = x_u8.float().div_(255.0)
    B = x.shape[0]
    if train:
        s = torch.empty(B).uniform_(0.6, 1.0)
        keep = torch.rand(B) < 0.2
        s[keep] = 1.0
        a = torch.exp(torch.empty(B).uniform_(-0.2, 0.2))
        a[keep] = 1.0
        sx = (s * a.sqrt()).clamp(max=1.0)
        sy = (s / a.sqrt()).clamp(max=1.0)
        tx = (torch.rand(B) * 2 - 1) * (1 - sx)
        ty = (torch.rand(B) * 2 - 1) * (1 - sy)
        flip = (torch.rand(B) < 0.5) & flippable
        sx = torch.where(flip, -sx, sx)
        theta = torch.zeros(B, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, tx, sy, ty
        grid = F.affine_grid(theta, (B, 3, res, res), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    elif res != x.shape[-1]:
        x = F.interpolate(x, size=(res, res), mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor(C.MEAN).view(1, 3, 1, 1)
    std = torch.tensor(C.STD).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def info_nce(a, b, scale):
    logits = scale * a @ b.t()
    t = torch.arange(a.shape[0])
    return 0.5 * (F.cross_entropy(logits, t) + F.cross_entropy(logits.t(), t))


def recall(sim, ks=(1, 5, 10)):
    ranks = (sim > sim.diag().unsqueeze(1)).sum(1)
    return {k: float((ranks < k).float().mean()) * 100 for k in ks}


@torch.no_grad()
def evaluate(img_model, head, imgs, temb, res=C.IMAGE_SIZE):
    img_model.eval(), head.eval()
    zi = torch.cat([img_model(augment(imgs[i:i + 256], res, None, False)) for i in range(0, len(imgs), 256)])
    zt = head(temb)
    out = {}
    for name, d in (("fine", C.FINE_DIM), ("coarse", C.COARSE_DIM)):
        a, b = F.normalize(zt[:, :d], dim=-1), F.normalize(zi[:, :d], dim=-1)
        out[name + "_t2i"] = recall(a @ b.t())
        out[name + "_i2t"] = recall(b @ a.t())
    img_model.train(), head.train()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/rendered")
    ap.add_argument("--work", default="encoders/train/work")
    ap.add_argument("--minutes", type=float, default=25.0)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-val", type=int, default=N_VAL, help="train-split pairs held aside for monitoring")
    ap.add_argument("--ema", type=float, default=0.0, help="EMA decay of the weights (0 = off; 0.995 with lr 3e-3 was much worse in a 28-min run)")
    ap.add_argument("--out", default=None, help="checkpoint path (default <work>/model.pt)")
    a = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(a.seed), random.seed(a.seed), np.random.seed(a.seed)
    os.makedirs(a.work, exist_ok=True)

    pairs = read_pairs(a.data)
    arr = image_cache(pairs, a.data, a.work)
    tmap = text_cache(pairs, a.work)
    train_idx = [i for i, p in enumerate(pairs) if p["split"] == "train"]
    rng = random.Random(1234)
    rng.shuffle(train_idx)
    val_idx, train_idx = train_idx[:a.n_val], train_idx[a.n_val:]
    log(f"train {len(train_idx)} val {len(val_idx)} test(held out, unused here) "
        f"{sum(p['split'] == 'test' for p in pairs)}")

    imgs = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()  # uint8 N,3,S,S
    flippable = torch.tensor([not any(w in p["caption"].lower() for w in ("left", "right", "arrow", "letter",
                                                                           "sign", "text", "flag"))
                              for p in pairs])
    var_emb = [torch.from_numpy(np.stack([tmap[v] for v in p["variants"]])) for p in pairs]
    cap_emb = torch.from_numpy(np.stack([tmap[p["caption"]] for p in pairs]))

    img_model = C.ImageTower().to(memory_format=torch.channels_last)
    head = C.TextHead()
    log_scale = torch.nn.Parameter(torch.full((2,), math.log(1 / 0.05)))
    decay, no_decay = [], []
    for m in (img_model, head):
        for n_, p in m.named_parameters():
            (decay if p.dim() > 1 else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": no_decay + [log_scale], "weight_decay": 0.0}], lr=a.lr)
    n_img = sum(p.numel() for p in img_model.parameters())
    n_head = sum(p.numel() for p in head.parameters())
    log(f"image tower {n_img / 1e6:.2f}M params, text head {n_head / 1e6:.2f}M params")

    ema = None
    if a.ema > 0:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
        ema = [AveragedModel(m, multi_avg_fn=get_ema_multi_avg_fn(a.ema), use_buffers=True) for m in (img_model, head)]
    budget = a.minutes * 60
    t0 = time.time()
    step, epoch, last_eval = 0, 0, t0
    history = []
    done = False
    while not done:
        epoch += 1
        perm = torch.tensor(train_idx)[torch.randperm(len(train_idx))]
        for s in range(0, len(perm) - a.batch + 1, a.batch):
            p = (time.time() - t0) / budget
            if p >= 1:
                done = True
                break
            res = 64 if p < 0.5 else (80 if p < 0.8 else 96)
            lr = a.lr * min(1.0, p / 0.03) * 0.5 * (1 + math.cos(math.pi * min(p, 1.0)))
            for g in opt.param_groups:
                g["lr"] = lr
            idx = perm[s:s + a.batch]
            x = augment(imgs[idx], res, flippable[idx], True)
            te = torch.stack([var_emb[i][random.randrange(len(var_emb[i]))] for i in idx.tolist()])
            zi = img_model(x)
            zt = head(te)
            sc = log_scale.exp().clamp(max=100)
            loss_f = info_nce(F.normalize(zt, dim=-1), F.normalize(zi, dim=-1), sc[0])
            loss_c = info_nce(F.normalize(zt[:, :C.COARSE_DIM], dim=-1),
                              F.normalize(zi[:, :C.COARSE_DIM], dim=-1), sc[1])
            loss = loss_f + loss_c
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:
                ema[0].update_parameters(img_model)
                ema[1].update_parameters(head)
            step += 1
            if step % 20 == 0:
                log(f"ep {epoch} step {step} p {p:.2f} res {res} lr {lr:.2e} loss {loss_f.item():.3f}/"
                    f"{loss_c.item():.3f} scale {sc[0].item():.1f}/{sc[1].item():.1f}")
            if time.time() - last_eval > 240 and val_idx:
                last_eval = time.time()
                r = evaluate(img_model, head, imgs[val_idx], cap_emb[val_idx])
                history.append({"min": (time.time() - t0) / 60, "epoch": epoch, "val": r})
                log("val", json.dumps(r))
    train_min = (time.time() - t0) / 60
    if ema is not None:
        img_model, head = ema[0].module, ema[1].module
    r = evaluate(img_model, head, imgs[val_idx], cap_emb[val_idx]) if val_idx else {}
    log(f"done: {epoch} epochs ({step} steps) in {train_min:.1f} min; val {json.dumps(r)}")
    ck = {"image": img_model.state_dict(), "head": head.state_dict(), "log_scale": log_scale.detach(),
          "meta": {"epochs": epoch, "steps": step, "train_minutes": train_min, "batch": a.batch,
                   "lr": a.lr, "seed": a.seed, "n_train": len(train_idx), "n_val": len(val_idx),
                   "image_params": n_img, "head_params": n_head, "val": r, "history": history,
                   "widths": list(C.WIDTHS), "ema": a.ema}}
    torch.save(ck, a.out or os.path.join(a.work, "model.pt"))


if __name__ == "__main__":
    main()
