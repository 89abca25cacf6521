#!/usr/bin/env python3
"""Build the image-caption pair list for the hivlp default model and render images.

Sources (all installed through registries, see train.sh):
  * Debian openclipart-svg            /usr/share/openclipart/svg      public domain
  * Debian tuxpaint-stamps-default    /usr/share/tuxpaint/stamps      GPL-2
  * npm openmoji@17.0.0 (npm pack)    <openmoji>/data/openmoji.json   CC-BY-SA-4.0
  * with --v3-npm DIR: the v3 sources of sources_v3.py (iconify colour sets, fluent-emoji-3d,
    and the unseen-style set, split "unseen")

Output (git-ignored): data/rendered/
  img/<id>.png      RGBA, rendered to fit a --box x --box box (default 128, aspect kept)
  pairs.jsonl       one JSON object per usable pair, with a fixed split ("train"/"test"[/"unseen"])
  manifest.tsv      id, split, source, package, license, attribution of every pair
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
With --v3-npm the same caption may come from several sources (one emoji in many styles), so
captions are deduplicated within a source only and the split is drawn over caption groups: a
test caption has exactly one pair (the others of its group are dropped), so no test caption
is seen in training in another style.
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sources_v3  # noqa: E402

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
    it, out, box = args
    if os.path.exists(out):
        return True
    src = it["src"]
    try:
        if src.endswith(".svg"):
            r = subprocess.run(["rsvg-convert", "-w", str(box), "-h", str(box), "--keep-aspect-ratio",
                                "-o", out + ".tmp", src], capture_output=True, timeout=20)
            if r.returncode != 0:
                return False
            im = Image.open(out + ".tmp")
            im.load()
        else:
            im = Image.open(src)
            im.load()
            im = im.convert("RGBA")
            im.thumbnail((box, box), Image.BILINEAR)
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


V2_ID_PREFIX = {"openclipart": "oc", "tuxpaint": "tp", "openmoji": "om"}


def caption_key(caption):
    return re.sub(r"[^a-z0-9]+", " ", caption.lower()).strip()


def v2_attribution(it):
    """Attribution of a v2 pair (v3 items carry theirs from sources_v3)."""
    if it["source"] == "openclipart":
        return f'{it["author"] or "unknown"} (openclipart), public domain'
    if it["source"] == "tuxpaint":
        return "Tux Paint contributors, GPL-2.0"
    return f'{it["author"]}, CC-BY-SA-4.0'


def split_v2(good, rng):
    """v2's split: one shuffle of the pairs, the first N_TEST are the test split."""
    order = list(range(len(good)))
    rng.shuffle(order)
    test = set(order[:N_TEST])
    return [dict(it, split="test" if i in test else "train") for i, it in enumerate(good)]


def group_key(it):
    """Emoji and icon sets name one concept the same way across styles (their titles); the
    free-text openclipart/tuxpaint captions group by the whole caption."""
    if it["source"] in ("openclipart", "tuxpaint") or not it["title"]:
        return caption_key(it["caption"])
    return caption_key(it["title"])


def split_by_caption_group(good, rng):
    """v3's split: N_TEST caption groups (group_key) go to test with one pair each (the rest
    of each such group is dropped); every other pair trains. Unseen-style pairs keep split "unseen"."""
    groups = collections.defaultdict(list)
    for it in good:
        if it.get("split") != "unseen":
            groups[group_key(it)].append(it)
    keys = sorted(groups)
    rng.shuffle(keys)
    test_pick = {id(groups[k][rng.randrange(len(groups[k]))]) for k in keys[:N_TEST]}
    test_keys = set(keys[:N_TEST])
    out = []
    for it in good:
        if it.get("split") == "unseen":
            out.append(it)
            continue
        key = group_key(it)
        if key not in test_keys:
            out.append(dict(it, split="train"))
        elif id(it) in test_pick:
            out.append(dict(it, split="test"))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--openmoji", required=True, help="unpacked npm openmoji package dir")
    ap.add_argument("--out", default="data/rendered")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--box", type=int, default=BOX, help="render box in px (v2: 128)")
    ap.add_argument("--v3-npm", default=None,
                    help="dir of unpacked npm packages: add the v3 sources (sources_v3.py)")
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
    extra, unseen = [], []
    if a.v3_npm:
        extra, unseen = sources_v3.v3_items(a.v3_npm, a.openmoji, os.path.join(a.out, "svg"))
        for it in unseen:
            it["split"] = "unseen"
        for src, n in sorted(collections.Counter(it["source"] for it in extra + unseen).items()):
            stats[f"{src}_items"] = n

    title_count = collections.Counter(it["title"].lower() for it in oc if it["title"])
    label_titles = {t for t, c in title_count.items() if c > 3}
    stats["openclipart_collection_label_titles"] = len(label_titles)
    stats["openclipart_files_with_label_title"] = sum(title_count[t] for t in label_titles)

    items = []
    for it in oc + tp + om + extra + unseen:
        cap, variants = build_caption(it, label_titles if it["source"] == "openclipart" else set())
        if not cap:
            continue
        it["caption"], it["variants"] = cap, variants
        prefix = V2_ID_PREFIX.get(it["source"])
        it["id"] = prefix + "_" + it["hash"][:12] if prefix else it["source"] + "_" + it["hash"]
        items.append(it)
    stats["with_caption"] = len(items)

    items.sort(key=lambda x: x["id"])
    seen_cap, seen_id, dedup = set(), set(), []
    for it in items:
        # v2: one pair per caption over all sources; v3: per source (styles of one concept)
        key = (it["source"], caption_key(it["caption"])) if a.v3_npm else caption_key(it["caption"])
        if key in seen_cap or it["id"] in seen_id:
            continue
        seen_cap.add(key)
        seen_id.add(it["id"])
        dedup.append(it)
    stats["after_caption_dedupe"] = len(dedup)

    jobs = [(it, os.path.join(a.out, "img", it["id"] + ".png"), a.box) for it in dedup]
    with ThreadPoolExecutor(a.jobs) as ex:
        ok = list(ex.map(render, jobs))
    good = [it for it, k in zip(dedup, ok) if k]
    stats["render_failed_or_blank"] = len(dedup) - len(good)
    stats["usable_pairs"] = len(good)

    rng = random.Random(SEED)
    split = split_by_caption_group(good, rng) if a.v3_npm else split_v2(good, rng)
    by_src = collections.Counter()
    with open(os.path.join(a.out, "pairs.jsonl"), "w", encoding="utf-8") as f, \
            open(os.path.join(a.out, "manifest.tsv"), "w", encoding="utf-8") as man:
        man.write("id\tsplit\tsource\tpackage\tlicense\tattribution\n")
        for it in split:
            it["image"] = "img/" + it["id"] + ".png"
            by_src[(it["source"], it["split"])] += 1
            del it["hash"]
            attribution = it.pop("attribution", None) or v2_attribution(it)
            package = it.pop("package", None) or it["source"]
            man.write("\t".join(x.replace("\t", " ") for x in (
                it["id"], it["split"], it["source"], package, it["license"], attribution)) + "\n")
            f.write(json.dumps(it, ensure_ascii=False) + "\n")
    stats["by_source_split"] = {f"{s}/{sp}": n for (s, sp), n in sorted(by_src.items())}
    json.dump(stats, open(os.path.join(a.out, "stats.json"), "w"), indent=1)
    print(json.dumps(stats, indent=1))


if __name__ == "__main__":
    sys.exit(main())
