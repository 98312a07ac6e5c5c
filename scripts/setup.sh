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
