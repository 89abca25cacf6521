#!/usr/bin/env python3
"""Evaluate the exported bundle with onnxruntime, next to the v2 bundle, on every evaluation set.

  evaluate.py --data encoders/train/work/rendered-v3 --v2 encoders/train/work/v2 \
      --twemoji <emoji-datasource-twitter package> --photos <unpacked photo-set packages>

Sets: the 1,000-pair held-out test split, the held-out art style (split "unseen"), 1,000
Twemoji (evaluation only) and the photo set (photos.tsv); text->image and image->text R@1/5/10
for coarse only, fine only and coarse top-100 -> fine, and the test split by style (source)
with fine vectors. Preprocessing is the one model.toml describes (common.load_rgb at the
graph's input size, common.make_tokenizer), captions go through the int8 text graph one per
run, as hivlp runs them. Also measures both graphs' throughput at batch 1 and 32 (2 threads).
Writes <work>/metrics.json and prints the tables the model card quotes.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402


def session(path):
    o = ort.SessionOptions()
    o.intra_op_num_threads = 2
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])


def encode_images(sess, paths, bs=64):
    size = sess.get_inputs()[0].shape[2]  # the bundle's own input size (v2: 96)
    out = []
    for s in range(0, len(paths), bs):
        x = C.to_tensor_input(np.stack([C.load_rgb(p, size) for p in paths[s:s + bs]]))
        out.append(sess.run(["embedding"], {"pixel_values": x})[0])
    return np.concatenate(out)


def encode_texts(sess, texts, bs=64):
    tok = C.make_tokenizer()
    names = {i.name for i in sess.get_inputs()}
    out = []
    for s in range(0, len(texts), bs):
        enc = tok.encode_batch(texts[s:s + bs])
        feed = {"input_ids": np.array([e.ids for e in enc], np.int64),
                "attention_mask": np.array([e.attention_mask for e in enc], np.int64)}
        if "token_type_ids" in names:
            feed["token_type_ids"] = np.array([e.type_ids for e in enc], np.int64)
        out.append(sess.run(["embedding"], feed)[0])
    return np.concatenate(out)


def norm(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)


def recall_from_rank(ranks):
    return {f"R@{k}": round(float((ranks < k).mean()) * 100, 1) for k in (1, 5, 10)}


def ranks_of(sim):
    return (sim > np.diag(sim)[:, None]).sum(1)


def two_stage_ranks(q, d, coarse_dim, m=100):
    m = min(m, len(d) - 1)  # a small set (the photo set) has fewer candidates than m
    qc, dc = norm(q[:, :coarse_dim]), norm(d[:, :coarse_dim])
    cs = qc @ dc.T
    ranks = np.empty(len(q), np.int64)
    for i in range(len(q)):
        cand = np.argpartition(-cs[i], m)[:m]
        if i not in cand:
            ranks[i] = 10 ** 6
            continue
        fs = d[cand] @ q[i]
        ranks[i] = int((fs > fs[list(cand).index(i)]).sum())
    return ranks


def metrics(zt, zi):
    out = {}
    for dname, q, d in (("text_to_image", zt, zi), ("image_to_text", zi, zt)):
        out[dname] = {
            "coarse_64": recall_from_rank(ranks_of(norm(q[:, :C.COARSE_DIM]) @ norm(d[:, :C.COARSE_DIM]).T)),
            "fine_256": recall_from_rank(ranks_of(q @ d.T)),
            "coarse_top100_fine_rerank": recall_from_rank(two_stage_ranks(q, d, C.COARSE_DIM, 100)),
        }
    return out


def main():
    from train_head import N_EVAL, photo_set, twemoji_set

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="encoders/train/work/rendered-v3")
    ap.add_argument("--bundle", default="encoders/models/default")
    ap.add_argument("--v2", default="encoders/train/work/v2", help="the v2 bundle, for comparison")
    ap.add_argument("--twemoji", default=None)
    ap.add_argument("--photos", default=None)
    ap.add_argument("--work", default="encoders/train/work")
    a = ap.parse_args()
    pairs = [json.loads(line) for line in open(os.path.join(a.data, "pairs.jsonl"), encoding="utf-8")]
    sets, test_sources = {}, None
    for split in ("test", "unseen"):
        chosen = [p for p in pairs if p["split"] == split][:N_EVAL]
        sets[split] = ([os.path.join(a.data, p["image"]) for p in chosen], [p["caption"] for p in chosen])
        if split == "test":
            test_sources = np.array([p["source"] for p in chosen])
    if a.twemoji:
        sets["twemoji"] = twemoji_set(a.twemoji, N_EVAL, 20240601)
    if a.photos:
        sets["photos"] = photo_set(a.photos)
    res = {}
    for name, (paths, caps) in sets.items():
        res[name] = {"n": len(paths)}
        for model, bundle in (("v3", a.bundle), ("v2", a.v2)):
            zi = encode_images(session(os.path.join(bundle, "image.onnx")), paths)
            zt = encode_texts(session(os.path.join(bundle, "text.onnx")), caps, bs=1)
            res[name][model] = metrics(zt, zi)
            if name == "test":
                res.setdefault("test_by_source", {})[model] = by_source(zt, zi, test_sources)
        print(name, res[name]["n"], "t2i fine R@10 v3", res[name]["v3"]["text_to_image"]["fine_256"]["R@10"],
              "v2", res[name]["v2"]["text_to_image"]["fine_256"]["R@10"], flush=True)
    res["throughput"] = throughput(a.bundle, sets["test"])
    json.dump(res, open(os.path.join(a.work, "metrics.json"), "w"), indent=1)
    for name in sets:
        print(f"\n### {name} ({res[name]['n']} pairs)\n\n" + table(res[name]))
    print("\n### test split by source (queries of each style, all 1,000 test candidates)\n\n"
          + source_table(res["test_by_source"]))
    print(json.dumps(res["throughput"]))


def by_source(zt, zi, sources):
    """Fine-vector R@1/5/10 of the test split's queries grouped by the style (source) of their
    pair, each query still ranked against every test candidate of every style."""
    t2i, i2t = ranks_of(zt @ zi.T), ranks_of(zi @ zt.T)
    return {s: {"n": int((sources == s).sum()),
                "text_to_image": recall_from_rank(t2i[sources == s]),
                "image_to_text": recall_from_rank(i2t[sources == s])}
            for s in sorted(set(sources))}


def source_table(m):
    rows = ["| source | pairs | t2i v3 R@1 | R@5 | R@10 | v2 R@10 | i2t v3 R@10 | v2 R@10 |",
            "|---|---|---|---|---|---|---|---|"]
    for s, r in m["v3"].items():
        t, v2 = r["text_to_image"], m["v2"][s]
        rows.append(f"| {s} | {r['n']} | {t['R@1']} | {t['R@5']} | {t['R@10']} | "
                    f"{v2['text_to_image']['R@10']} | {r['image_to_text']['R@10']} | "
                    f"{v2['image_to_text']['R@10']} |")
    return "\n".join(rows)


def throughput(bundle, test, seconds=5.0):
    """Items per second of each graph at batch 1 and 32 (preprocessed inputs, 2 threads)."""
    paths, caps = test
    img_s = session(os.path.join(bundle, "image.onnx"))
    txt_s = session(os.path.join(bundle, "text.onnx"))
    size = img_s.get_inputs()[0].shape[2]
    tok = C.make_tokenizer()
    out = {}
    for b in (1, 32):
        x = C.to_tensor_input(np.stack([C.load_rgb(p, size) for p in paths[:b]]))
        enc = [tok.encode(c) for c in caps[:b]]
        for name, run in (("images", lambda: img_s.run(None, {"pixel_values": x})),
                          ("captions", lambda: [txt_s.run(None, {
                              "input_ids": np.array([e.ids], np.int64),
                              "attention_mask": np.array([e.attention_mask], np.int64),
                              "token_type_ids": np.array([e.type_ids], np.int64)}) for e in enc])):
            run()
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                run()
                n += b
            out[f"{name}_batch{b}_per_s"] = round(n / (time.perf_counter() - t0), 1)
    return out


def table(m):
    rows = ["| direction | vectors | v3 R@1 | R@5 | R@10 | v2 R@10 |", "|---|---|---|---|---|---|"]
    for d in ("text_to_image", "image_to_text"):
        for v, label in (("coarse_64", "coarse only (64-d prefix)"), ("fine_256", "fine only (256-d)"),
                         ("coarse_top100_fine_rerank", "coarse top-100 → fine re-rank")):
            r = m["v3"][d][v]
            rows.append(f"| {d.replace('_', ' ')} | {label} | {r['R@1']} | {r['R@5']} | {r['R@10']} | "
                        f"{m['v2'][d][v]['R@10']} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
