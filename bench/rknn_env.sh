#!/usr/bin/env bash
# Creates a virtual environment with RKNN-Toolkit2 2.5.0 (Rockchip's ONNX -> .rknn compiler and
# its PC simulator), apart from channelcut's own environment: its metadata pins torch<=2.4.0,
# numpy<=1.26.4, onnx<=1.18.0 and protobuf<=4.25.4, which clash with ours, so the wheel goes in
# with --no-deps and its real requirements by hand. Idempotent: a venv that already imports
# rknn.api is left as it is.
#
#   bash bench/rknn_env.sh [VENV_DIR]     (default: $RKNN_VENV or /work/rknn-venv)
#   $VENV_DIR/bin/python bench/rknn_build.py model.onnx --fp16
set -euo pipefail

VENV="${1:-${RKNN_VENV:-/work/rknn-venv}}"
PY="${PYTHON:-python3.11}"   # the wheel is cp311 only

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import rknn.api" >/dev/null 2>&1; then
    echo "rknn_env: $VENV already has rknn-toolkit2"
    exit 0
fi

"$PY" -m venv "$VENV"
# pip prints "rknn-toolkit2 2.5.0 requires torch<=2.4.0 ... / opencv-python" as ERROR lines: they
# are the pins this script overrides on purpose (the toolkit runs with these versions), not a
# failure; pip exits 0.
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" --no-deps "rknn-toolkit2==2.5.0"
"${PIP[@]}" "protobuf>=4.21.6,<=4.25.4" psutil ruamel.yaml scipy tqdm opencv-python-headless \
    fast-histogram "numpy<=1.26.4" "onnx>=1.16.1,<=1.18.0" onnxruntime
# rknn_utils imports torch at import time; 2.13.0 is the version that installs as a CPU wheel
# (any other spec pulls CUDA packages). rknn imports pkg_resources, gone from setuptools 81.
"${PIP[@]}" "torch==2.13.0" "setuptools<81"
# torch may have moved numpy past the toolkit's cap: put it back.
"${PIP[@]}" "numpy<=1.26.4"

"$VENV/bin/python" -c "import rknn.api; print('rknn_env: rknn-toolkit2 ready in $VENV')"
