#!/usr/bin/env bash
# Puts channelcut (editable, this checkout) and pytest into RKNN-Toolkit2's venv (made by
# bench/rknn_env.sh), for tests/test_rknn_interop.py and the facade on the real toolkit.
# channelcut's own requirements are met there at the toolkit's pins: onnx 1.18.0 (we need
# >=1.18), numpy 1.26.4 (>=1.26), onnxruntime and torch from rknn_env.sh; only onnx-ir and rich
# are added. --no-deps on channelcut itself so that pip cannot move numpy or onnx past the
# toolkit's caps; the constraints hold them while onnx-ir and rich resolve (onnx-ir then takes
# ml_dtypes 0.5.x, the last line for numpy 1.x).
#
#   bash bench/rknn_env.sh VENV && bash bench/rknn_channelcut.sh VENV
#   VENV/bin/python -m pytest -q tests/test_rknn_interop.py
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${1:-${RKNN_VENV:-/work/rknn-venv}}"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" --no-deps -e .
"${PIP[@]}" "onnx-ir>=1.0,<2" "rich>=13" "pytest>=8" "numpy<=1.26.4" "onnx>=1.18,<=1.18.0"
"$VENV/bin/python" -c "import rknn.api, channelcut, onnx, numpy; \
print(f'rknn_channelcut: channelcut in $VENV (onnx {onnx.__version__}, numpy {numpy.__version__})')"
