#!/usr/bin/env bash
# Set up pandiff on a fresh machine: torch first (the pinned 2.13.0 wheel; on a GPU machine the
# same pin brings the CUDA build), then the package with its test extras. Never pulls torchvision.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  "$PY" -m pip install --quiet "torch==2.13.0"
fi
"$PY" -m pip install --quiet --disable-pip-version-check -e ".[dev]"
# Headless Chromium for the web demo's browser test (tests/test_demo.py). Best effort: without it
# (no apt, not root, no mirror) the set-up still succeeds and that one test skips, saying why.
if [ ! -x /usr/bin/chromedriver ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } >/dev/null 2>&1; then
    echo "setup: could not install chromium + chromium-driver; the demo's browser test will skip" >&2
  fi
fi
