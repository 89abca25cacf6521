#!/usr/bin/env python3
"""Build the image-caption pair list for the hivlp default model and render images.

Sources (all installed through registries, see train.sh):
  * Debian openclipart-svg            /usr/share/openclipart/svg      public domain
  * Debian tuxpaint-stamps-default    /usr/share/tuxpaint/stamps      GPL-2
  * npm openmoji@17.0.0 (npm pack)    <openmoji>/data/openmoji.json   CC-BY-SA-4.0

Output (git-ignored): data/rendered/
  img/<id>.png      RGBA, rendered to fit a 128x128 box (aspect kept)
  pairs.jsonl       one JSON object per usable pair, with a fixed split ("train"/"test")
  stats.json        counts after each cleaning step

Cleaning:
  * identical files (openclipart ships many files twice under different folders) -> one
  * openclipart titles shared by more than 3 files are collection labels, not captions:
    such a title is dropped and the caption is built from description + keywords
  * openmoji skin-tone variants (skintone != "") are dropped (their caption differs only
    by "medium skin tone" and the image only by a colour patch)
  * SVGs that rsvg-convert fails on (or that render blank) are skipped
  * duplicate captions (case/space-insensitive) -> first in sorted order kept
Split: pairs sorted by id, shuffled with random.Random(20240601); the first 1,000 are the
held-out test split that training never sees.
"""
import argparse
import collections
import hashlib
import html
import json
import os
import random
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

SEED = 20240601
N_TEST = 1000
BOX = 128

OPENCLIPART = "/usr/share/openclipart/svg"
TUXPAINT = "/usr/share/tuxpaint/stamps"


def clean(s):
    s = html.unescape(s or "")
    s = re.sub(r"<[^>]+>", " ", s)
    s = re.sub(r"\s+", " ", s).strip()
    return s


WORK_RE = re.compile(r"<cc:Work\b.*?</cc:Work>", re.S)
TITLE_RE = re.compile(r"<dc:title>(.*?)</dc:title>", re.S)
DESC_RE = re.compile(r"<dc:description>(.*?)</dc:description>", re.S)
SUBJ_RE = re.compile(r"<dc:subject>(.*?)</dc:subject>", re.S)
LI_RE = re.compile(r"<rdf:li>(.*?)</rdf:li>", re.S)
CREATOR_RE = re.compile(r"<dc:creator>.*?<dc:title>(.*?)</dc:title>", re.S)

BORING_KW = {"", "svg", "clip art", "clipart", "image", "media", "png", "public domain",
             "externalsource", "hash", "unsorted", "inkscape", "openclipart", "remix", "drawing"}


def kw_list(raw):
    out = []
    for k in raw:
        for part in re.split(r"[,;]", k):
            p = clean(part).lower()
            if p and p not in BORING_KW and len(p) < 40 and p not in out:
                out.append(p)
    return out


def openclipart_items():
    items, seen = [], set()
    for root, _dirs, files in os.walk(OPENCLIPART):
        for f in sorted(files):
            if not f.endswith(".svg"):
                continue
            p = os.path.join(root, f)
            try:
                data = open(p, "rb").read()
            except OSError:
                continue
            h = hashlib.sha1(data).hexdigest()
            if h in seen:
                continue
            seen.add(h)
            txt = data.decode("utf-8", "replace")
            m = WORK_RE.search(txt)
            work = m.group(0) if m else ""
            t = TITLE_RE.search(work)
            d = DESC_RE.search(work)
            s = SUBJ_RE.search(work)
            c = CREATOR_RE.search(work)
            items.append({
                "source": "openclipart",
                "license": "public-domain",
                "src": p,
                "hash": h,
                "title": clean(t.group(1)) if t else "",
                "description": clean(d.group(1)) if d else "",
                "keywords": kw_list(LI_RE.findall(s.group(1))) if s else [],
                "author": clean(c.group(1)) if c else "",
            })
    return items


def tuxpaint_items():
    items = []
    for root, _dirs, files in os.walk(TUXPAINT):
        for f in sorted(files):
            if not f.endswith(".txt"):
                continue
            stem = os.path.join(root, f[:-4])
            img = None
            for ext in (".svg", ".png"):
                if os.path.exists(stem + ext):
                    img = stem + ext
                    break
            if img is None:
                continue
            lines = open(stem + ".txt", encoding="utf-8", errors="replace").read().splitlines()
            desc = clean(lines[0]) if lines else ""
            if not desc or "=" in desc.split(" ")[0]:
                continue
            cat = os.path.relpath(root, TUXPAINT).split(os.sep)
            items.append({
                "source": "tuxpaint",
                "license": "GPL-2.0",
                "src": img,
                "hash": hashlib.sha1(open(img, "rb").read()).hexdigest(),
                "title": "",
                "description": desc,
                "keywords": [c for c in cat if c not in ("cartoon", "photo")][:3],
                "author": "Tux Paint contributors",
            })
    return items


def openmoji_items(root):
    data = json.load(open(os.path.join(root, "data", "openmoji.json"), encoding="utf-8"))
    items, n_skin = [], 0
    for e in data:
        if str(e.get("skintone", "")) != "":
            n_skin += 1
            continue
        p = os.path.join(root, "color", "svg", e["hexcode"] + ".svg")
        if not os.path.exists(p):
            continue
        tags = kw_list((e.get("tags") or "").split(",") + (e.get("openmoji_tags") or "").split(","))
        items.append({
            "source": "openmoji",
            "license": "CC-BY-SA-4.0",
            "src": p,
            "hash": e["hexcode"],
            "title": clean(e.get("annotation", "")).replace(":", ","),
            "description": "",
            "keywords": tags,
            "author": clean(e.get("openmoji_author", "")) + " (OpenMoji)",
        })
    return items, n_skin


STEM_STOP = {"svg", "aiga", "icon", "icons", "clipart", "lemon", "theme", "cartoon", "pt", "step", "ab",
             "architetto", "francesco", "rollandin", "de", "nicu", "buculei", "the", "and", "of", "01", "02"}


def stem_words(it):
    """Words of the file name, without author names and numbers (for collection-label files)."""
    stem = os.path.splitext(os.path.basename(it["src"]))[0]
    author = set(re.split(r"[^a-z]+", it["author"].lower()))
    words = re.split(r"[^A-Za-z]+", re.sub(r"([a-z])([A-Z])", r"\1 \2", stem))
    out = []
    for w in words:
        w = w.lower()
        if len(w) >= 3 and w not in STEM_STOP and w not in author and w not in out:
            out.append(w)
    return " ".join(out[:5])


def build_caption(it, label_titles):
    """Return (canonical caption, list of training caption variants)."""
    title = it["title"]
    if title.lower() in label_titles or (it["source"] == "openclipart" and not title):
        title = stem_words(it)
    desc = it["description"]
    if len(desc) > 200:
        desc = desc[:200].rsplit(" ", 1)[0]
    kws = [k for k in it["keywords"] if k.lower() != title.lower()][:8]
    parts = []
    if title:
        parts.append(title)
    if desc and desc.lower() != title.lower():
        parts.append(desc)
    if not parts and kws:
        parts.append(", ".join(kws[:4]))
        kws = kws[4:]
    if not parts:
        return None, []
    base = ". ".join(parts)
    canonical = base + (". " + ", ".join(kws) if kws else "")
    variants = [canonical, base]
    if title:
        variants.append(title)
    if desc:
        variants.append(desc)
    if len(kws) >= 2:
        variants.append(", ".join(kws))
        variants.append((title or parts[0]) + ", " + ", ".join(kws[:3]))
    uniq = []
    for v in variants:
        v = v.strip()
        if v and v not in uniq:
            uniq.append(v)
    return canonical, uniq


def render(args):
    it, out = args
    if os.path.exists(out):
        return True
    src = it["src"]
    try:
        if src.endswith(".svg"):
            r = subprocess.run(["rsvg-convert", "-w", str(BOX), "-h", str(BOX), "--keep-aspect-ratio",
                                "-o", out + ".tmp", src], capture_output=True, timeout=20)
            if r.returncode != 0:
                return False
            im = Image.open(out + ".tmp")
            im.load()
        else:
            im = Image.open(src)
            im.load()
            im = im.convert("RGBA")
            im.thumbnail((BOX, BOX), Image.BILINEAR)
        im = im.convert("RGBA")
        # reject blank renders (fully transparent or single colour)
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        rgb = Image.alpha_composite(bg, im).convert("L")
        lo, hi = rgb.getextrema()
        if hi - lo < 16 or min(im.size) < 8:
            return False
        im.save(out, optimize=False)
        return True
    except Exception:
        return False
    finally:
        if os.path.exists(out + ".tmp"):
            os.remove(out + ".tmp")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--openmoji", required=True, help="unpacked npm openmoji package dir")
    ap.add_argument("--out", default="data/rendered")
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    os.makedirs(os.path.join(a.out, "img"), exist_ok=True)
    stats = collections.OrderedDict()

    oc = openclipart_items()
    tp = tuxpaint_items()
    om, n_skin = openmoji_items(a.openmoji)
    stats["openclipart_unique_files"] = len(oc)
    stats["tuxpaint_stamps_with_txt"] = len(tp)
    stats["openmoji_without_skintone"] = len(om)
    stats["openmoji_skintone_dropped"] = n_skin

    title_count = collections.Counter(it["title"].lower() for it in oc if it["title"])
    label_titles = {t for t, c in title_count.items() if c > 3}
    stats["openclipart_collection_label_titles"] = len(label_titles)
    stats["openclipart_files_with_label_title"] = sum(title_count[t] for t in label_titles)

    items = []
    for it in oc + tp + om:
        cap, variants = build_caption(it, label_titles if it["source"] == "openclipart" else set())
        if not cap:
            continue
        it["caption"], it["variants"] = cap, variants
        it["id"] = {"openclipart": "oc", "tuxpaint": "tp", "openmoji": "om"}[it["source"]] + "_" + it["hash"][:12]
        items.append(it)
    stats["with_caption"] = len(items)

    items.sort(key=lambda x: x["id"])
    seen_cap, seen_id, dedup = set(), set(), []
    for it in items:
        key = re.sub(r"[^a-z0-9]+", " ", it["caption"].lower()).strip()
        if key in seen_cap or it["id"] in seen_id:
            continue
        seen_cap.add(key)
        seen_id.add(it["id"])
        dedup.append(it)
    stats["after_caption_dedupe"] = len(dedup)

    jobs = [(it, os.path.join(a.out, "img", it["id"] + ".png")) for it in dedup]
    with ThreadPoolExecutor(a.jobs) as ex:
        ok = list(ex.map(render, jobs))
    good = [it for it, k in zip(dedup, ok) if k]
    stats["render_failed_or_blank"] = len(dedup) - len(good)
    stats["usable_pairs"] = len(good)

    rng = random.Random(SEED)
    order = list(range(len(good)))
    rng.shuffle(order)
    test = set(order[:N_TEST])
    by_src = collections.Counter()
    with open(os.path.join(a.out, "pairs.jsonl"), "w", encoding="utf-8") as f:
        for i, it in enumerate(good):
            it["split"] = "test" if i in test else "train"
            it["image"] = "img/" + it["id"] + ".png"
            by_src[(it["source"], it["split"])] += 1
            del it["hash"]
            f.write(json.dumps(it, ensure_ascii=False) + "\n")
    stats["by_source_split"] = {f"{s}/{sp}": n for (s, sp), n in sorted(by_src.items())}
    json.dump(stats, open(os.path.join(a.out, "stats.json"), "w"), indent=1)
    print(json.dumps(stats, indent=1))


if __name__ == "__main__":
    sys.exit(main())
