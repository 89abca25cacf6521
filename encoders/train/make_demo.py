#!/usr/bin/env python3
"""Build data/demo/: ~300 pairs from the held-out test split (openclipart + openmoji),
small PNGs with one-line .txt captions, LICENSES.md and queries.txt checked with the bundle."""
import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402
import evaluate as E  # noqa: E402

N_OC, N_OM = 240, 60
CANDIDATE_QUERIES = [
    ("a red apple", ["apple"]), ("a cat", ["cat", "kitten"]), ("a dog", ["dog", "puppy"]),
    ("a car", ["car", "auto", "vehicle"]), ("a flower", ["flower", "rose", "tulip", "daisy"]),
    ("a house", ["house", "home", "building"]), ("a bird", ["bird"]), ("a fish", ["fish"]),
    ("a tree", ["tree"]), ("a smiling face", ["smil", "face", "happy"]), ("musical instrument", ["guitar", "piano", "music", "violin", "drum", "trumpet", "instrument"]),
    ("a computer", ["computer", "laptop", "monitor", "pc"]), ("a flag", ["flag"]), ("food", ["food", "fruit", "cake", "bread"]),
    ("a train", ["train", "locomotive", "railway"]), ("an airplane", ["plane", "aircraft", "airplane"]),
    ("the sun", ["sun"]), ("a clock", ["clock", "time", "watch"]), ("a heart", ["heart", "love"]),
    ("a star", ["star"]), ("a map of the world", ["map", "world", "globe"]), ("a boat", ["boat", "ship", "sail"]),
    ("a book", ["book"]), ("a warning sign", ["warning", "sign", "danger"]), ("an insect", ["insect", "bug", "bee", "butterfly", "ant"]),
]


GENERIC = {"the", "and", "with", "for", "icon", "icons", "computer", "action", "application", "theme", "lemon",
           "people", "clip", "art", "openclipart", "svg", "symbol", "symbols", "signs", "jean", "victor", "balin",
           "cartoon", "simple", "black", "white", "part", "collection", "flat", "other", "object", "objects",
           "image", "drawing", "from", "this", "that", "are", "was", "has", "one", "two", "mimetypes",
           "mapsym", "eps", "converted", "gnome", "mime", "led", "webpage", "aiga", "stock", "red", "shape", "sign",
           "filesystem", "filesystems", "apps", "miscellany", "various", "united", "nations", "member", "remix"}


def slug(s, n=4):
    w = re.findall(r"[a-z0-9]+", s.lower())
    return "_".join(w[:n]) or "item"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/rendered")
    ap.add_argument("--bundle", default="encoders/models/default")
    ap.add_argument("--out", default="data/demo")
    a = ap.parse_args()
    pairs = [json.loads(l) for l in open(os.path.join(a.data, "pairs.jsonl"), encoding="utf-8")]
    test = [p for p in pairs if p["split"] == "test"]
    rng = random.Random(7)
    oc = [p for p in test if p["source"] == "openclipart" and len(p["caption"]) >= 8]
    om = [p for p in test if p["source"] == "openmoji"]
    chosen = rng.sample(oc, min(N_OC, len(oc))) + rng.sample(om, min(N_OM, len(om)))
    if os.path.isdir(a.out):
        shutil.rmtree(a.out)
    os.makedirs(a.out)
    rows, names = [], set()
    for p in chosen:
        base = f"{'oc' if p['source'] == 'openclipart' else 'om'}_{slug(p['caption'])}"
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.add(name)
        im = Image.open(os.path.join(a.data, p["image"])).convert("RGBA")
        im.thumbnail((128, 128), Image.LANCZOS)
        path = os.path.join(a.out, name + ".png")
        im.save(path, optimize=True)
        if shutil.which("pngquant"):
            subprocess.run(["pngquant", "--force", "--skip-if-larger", "--quality", "70-95", "--speed", "1",
                            "--output", path, path], capture_output=True)
        open(os.path.join(a.out, name + ".txt"), "w", encoding="utf-8").write(p["caption"].replace("\n", " ") + "\n")
        rows.append((name, p))

    # queries checked against the committed bundle
    img_s = E.session(os.path.join(a.bundle, "image.onnx"))
    txt_s = E.session(os.path.join(a.bundle, "text.onnx"))
    zi = E.encode_images(img_s, [os.path.join(a.out, n + ".png") for n, _ in rows])
    caps = [p["caption"].lower() for _, p in rows]
    # candidate queries: a fixed list plus "a <word>" for frequent caption words of the demo set
    words = [set(re.findall(r"[a-z]{3,}", c)) for c in caps]
    freq = {}
    for ws in words:
        for w in ws:
            freq[w] = freq.get(w, 0) + 1
    cands = list(CANDIDATE_QUERIES) + [(w, [w]) for w, n in sorted(freq.items())
                                       if 4 <= n <= 25 and w not in GENERIC]
    zq = E.encode_texts(txt_s, [q for q, _ in cands])
    scored = []
    for (q, keys), v in zip(cands, zq):
        top = np.argsort(-(zi @ v))[:5]
        rel = [any(re.search(r"\b" + k, caps[i]) for k in keys) for i in top]
        n_rel = sum(any(re.search(r"\b" + k, c) for k in keys) for c in caps)
        # precision in the top 5, relative to how many relevant items the demo set has
        score = rel[0] * 2 + sum(rel) / max(1, min(5, n_rel)) * 3
        scored.append((round(score, 2), q, [rows[i][0] for i in top]))
    scored.sort(key=lambda x: (-x[0], x[1]))
    good, used = [], set()
    for hits, q, top in scored:
        if len(good) < 6 and not (set(top[:3]) & used):
            good.append((hits, q, top))
            used |= set(top[:3])
    # image query: the demo image whose 4 nearest other images share the most caption words
    best = None
    sims = zi @ zi.T
    for i in range(len(rows)):
        nn = [j for j in np.argsort(-sims[i]) if j != i][:4]
        s = sum(len(words[i] & words[j] - GENERIC) > 0 for j in nn)
        if best is None or s > best[0]:
            best = (s, i, nn)
    with open(os.path.join(a.out, "queries.txt"), "w") as f:
        for hits, q, top in good:
            f.write(q + "\n")
        f.write(f"image: {rows[best[1]][0]}.png\n")
    with open(os.path.join(a.out, "README.md"), "w") as f:
        f.write("# hivlp demo set\n\n300 clip-art images with captions from the held-out test split of "
                "hivlp-default (see LICENSES.md). `queries.txt` holds text queries (one a line) and one "
                "`image: <file>` query, chosen with `encoders/train/make_demo.py`, which checked them with "
                "onnxruntime against the bundled model. Expected top 5 (hivlp-default, fine 256-d, cosine):\n\n")
        for hits, q, top in good:
            f.write(f"- `{q}` (score {hits}): {', '.join(top)}\n")
        f.write(f"- `image: {rows[best[1]][0]}.png` nearest others: {', '.join(rows[j][0] for j in best[2])}\n")
    for hits, q, top in scored[:25]:
        print(hits, q, top)
    print("chosen", [q for _, q, _ in good])
    print("image query", rows[best[1]][0], [rows[j][0] for j in best[2]])

    with open(os.path.join(a.out, "LICENSES.md"), "w", encoding="utf-8") as f:
        f.write("""# data/demo — sources and licences

Small demo set for hivlp: {n} images (PNG, ≤128 px, rendered from SVG with rsvg-convert, then
palette-quantised) with one-line captions in a sidecar `.txt`. All are from the held-out test split
of the hivlp-default model, so the model never saw them in training.

| prefix | source | licence |
|---|---|---|
| `oc_` | Open Clip Art Library, via Debian package `openclipart-svg` | public domain |
| `om_` | OpenMoji 17.0.0 (https://openmoji.org), via npm `openmoji@17.0.0` | CC-BY-SA-4.0 — "OpenMoji – the open-source emoji and icon project. License: CC BY-SA 4.0" |

The `om_` images are adaptations (rasterised, resized) of OpenMoji graphics and are shared under
CC-BY-SA-4.0 (https://creativecommons.org/licenses/by-sa/4.0/). Captions for `om_` files are the
OpenMoji annotation and tags; captions for `oc_` files come from the SVG metadata (title,
description, keywords) or the file name.

## Files
| file | source file | author | licence |
|---|---|---|---|
""".format(n=len(rows)))
        for name, p in sorted(rows):
            src = p["src"].split("/package/")[-1] if p["source"] == "openmoji" else p["src"]
            f.write(f"| {name}.png | {src} | {p['author'] or 'unknown'} | {p['license']} |\n")
    total = sum(os.path.getsize(os.path.join(a.out, x)) for x in os.listdir(a.out))
    print(f"demo: {len(rows)} pairs, {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
