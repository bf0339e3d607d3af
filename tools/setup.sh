#!/usr/bin/env bash
# Set up a fresh machine: a venv in .venv with the runtime and (unless --runtime-only)
# the test dependencies, including the oracles: Meta's sam2==1.1.0 and segment-anything==1.0,
# MobileSAM's code, Hugging Face transformers.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip --disable-pip-version-check -q"
# torch first and pinned: 2.13.0 is a CPU build on local disk here; anything unpinned
# would download several GB of CUDA build.
$PIP install "torch==2.13.0"
$PIP install -r requirements.txt
if [ "${1:-}" != "--runtime-only" ]; then
  $PIP install -r requirements-test.txt
  # Oracles whose declared dependencies would pull torchvision and a newer (CUDA) torch:
  # installed without them. torchvision, built against another torch, is imported only
  # through lab.oracle.import_torchvision (its transforms work, its compiled ops do not).
  $PIP install --no-deps "segment-anything==1.0" "mobilesam-mirror==1.0.0" "timm==1.0.31" \
    "torchvision==0.28.0"
  # The oracle is an sdist; build it against the torch above (no isolated build env,
  # no CUDA extension) and without its declared torchvision dependency.
  if ! .venv/bin/python -c "import sam2" 2>/dev/null; then
    SAM2_BUILD_CUDA=0 SAM2_BUILD_ALLOW_ERRORS=1 $PIP install --no-deps --no-build-isolation "sam2==1.1.0"
  fi
fi
echo "setup: .venv ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
