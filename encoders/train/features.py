#!/usr/bin/env python3
"""Cache the frozen v3 backbone's pooled features of every rendered pair (onnxruntime, batched).

  features.py --data encoders/train/work/rendered-v3 --onnx encoders/train/work/backbone192.onnx \
      --out encoders/train/work/features192.npz

The cache (git-ignored, under encoders/train/work/) holds ids, splits and float32 [N, 1280]
features in pairs.jsonl order. Rows of ids already in an existing cache are reused (renders are
deterministic), so adding a source or rerunning after an interruption only encodes new images. The image size is
read from the ONNX input; preprocessing is common.load_rgb + common.to_tensor_input ([-1, 1],
what the TF-ported weights expect). Run it under `nice -n 19` with at most 2 threads: the
machine is shared.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402
from backbone import ort_session  # noqa: E402


def read_pairs(data):
    with open(os.path.join(data, "pairs.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def cached_rows(path):
    """{id: feature row} of an existing cache (empty when there is none)."""
    if not os.path.exists(path):
        return {}
    with np.load(path, allow_pickle=False) as z:
        return dict(zip(z["ids"].tolist(), z["features"]))


def image_features(sess, paths, batch):
    """Pooled backbone features of image files, [len(paths), FEATURE_DIM] float32."""
    size = sess.get_inputs()[0].shape[2]
    out = []
    t0 = time.time()
    for s in range(0, len(paths), batch):
        x = C.to_tensor_input(np.stack([C.load_rgb(p, size) for p in paths[s:s + batch]]))
        out.append(sess.run(None, {"pixel_values": x})[0].astype(np.float32))
        if s // batch % 50 == 0:
            print(f"{s}/{len(paths)} images, {(s + len(x)) / (time.time() - t0):.1f} img/s", flush=True)
    return np.concatenate(out) if out else np.zeros((0, 1280), np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="prepare_data.py output dir (pairs.jsonl, img/)")
    ap.add_argument("--onnx", required=True, help="backbone exported by backbone.py")
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    pairs = read_pairs(a.data)
    ids = [p["id"] for p in pairs]
    known = cached_rows(a.out)
    todo = [p for p in pairs if p["id"] not in known]
    print(f"{len(pairs) - len(todo)} of {len(pairs)} pairs cached, encoding {len(todo)}", flush=True)
    if todo:
        sess = ort_session(a.onnx, a.threads)
        new = image_features(sess, [os.path.join(a.data, p["image"]) for p in todo], a.batch)
        known.update(zip((p["id"] for p in todo), new))
    feats = np.stack([known[i] for i in ids]).astype(np.float32) if ids else np.zeros((0, 1280), np.float32)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    tmp = a.out + ".tmp.npz"
    np.savez(tmp, ids=np.array(ids), split=np.array([p["split"] for p in pairs]), features=feats)
    os.replace(tmp, a.out)
    print(f"wrote {a.out}: {feats.shape}")


if __name__ == "__main__":
    sys.exit(main())
