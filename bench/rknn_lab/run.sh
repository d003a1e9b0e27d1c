#!/usr/bin/env bash
# Reproduces bench/RKNN_FINDINGS.md's model table: the seed demo, resnet18 and mobilenet_v2
# (naive-pruned, 50% ln_structured), each cut several ways by channelcut and built by
# RKNN-Toolkit2 for rk3588 (fp16; int8 with INT8=1). About 10 minutes on 2 cores.
#
#   bash bench/rknn_lab/run.sh [WORKDIR]      (default /tmp/rknnlab-run)
#
# Needs channelcut's venv ($PY, default .venv/bin/python, with torch and torchvision for the
# exports) and the RKNN venv ($RKNN_PY, default /work/rknn-venv/bin/python; bench/rknn_env.sh).
# The variants that switch off a site kind or write reinsertions as a one-hot Conv run on a
# scratch copy of channelcut with lab_hacks.patch applied (environment switches
# CHANNELCUT_SKIP_SITES and CHANNELCUT_REINSERT_FORM); the package itself is not changed.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
WORK="${1:-/tmp/rknnlab-run}"
PY="${PY:-$REPO/.venv/bin/python}"
RKNN_PY="${RKNN_PY:-/work/rknn-venv/bin/python}"
mkdir -p "$WORK"/models "$WORK"/cuts "$WORK"/res

# channelcut with the lab switches
rm -rf "$WORK/cc" && mkdir -p "$WORK/cc" && cp -r "$REPO/channelcut" "$WORK/cc/"
patch -s -d "$WORK/cc" -p1 < "$HERE/lab_hacks.patch"

PYTHONPATH="$REPO:$REPO/bench" "$PY" - "$WORK/models" <<'EOF'
import sys
import common  # bench/common.py: tests/zoo.py's builders, torchvision importable
import onnx, torch
from channelcut.rknn.demo import pruned_net
out = sys.argv[1]
torch.onnx.export(pruned_net(), (torch.randn(1, 3, 224, 224),), f"{out}/demo.onnx",
                  dynamo=False, opset_version=17, input_names=["input"])
for name in ["resnet18", "mobilenet_v2"]:
    model = common.build(name, (1, 3, 224, 224), 0)
    common.zoo.prune_ln_structured(model, 0.5)
    onnx.save(common.export(model, (1, 3, 224, 224)), f"{out}/{name}.onnx")
EOF

cut() {  # cut MODEL VARIANT [env assignments --] [channelcut options]
    local m=$1 v=$2; shift 2
    local envs=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do envs+=("$1"); shift; done
    [ $# -gt 0 ] && shift
    # from the patched copy's folder: `python -m` puts the working directory first on sys.path,
    # and the repository's own (unpatched) channelcut must not shadow it
    (cd "$WORK/cc" && env "${envs[@]}" PYTHONPATH="$WORK/cc" "$PY" -m channelcut.cli cut \
        "$WORK/models/$m.onnx" -o "$WORK/cuts/$m.$v.onnx" -q "$@")
}
for m in demo resnet18 mobilenet_v2; do
    cut $m full --
    cut $m zero -- --zero-only
    cut $m zero_a8 -- --zero-only --align 8
    cut $m zero_a16 -- --zero-only --align 16
    cut $m full_a16 -- --align 16
    cut $m full_nr CHANNELCUT_SKIP_SITES=reinsert --
    cut $m full_nbr "CHANNELCUT_SKIP_SITES=border fold,reinsert" --
    cut $m full_rc CHANNELCUT_REINSERT_FORM=conv --
    cut $m full_rc_a16 CHANNELCUT_REINSERT_FORM=conv -- --align 16
done
cut mobilenet_v2 zero_a32 -- --zero-only --align 32
"$PY" "$HERE/carrier.py" "$WORK/cuts/demo.zero.onnx" "$WORK/cuts/demo.carrier.onnx"

build() {  # build NAME ONNX [rknn_build options]
    local name=$1 model=$2; shift 2
    "$RKNN_PY" "$REPO/bench/rknn_build.py" "$model" "$@" > "$WORK/res/$name.json" || true
}
for m in demo resnet18 mobilenet_v2; do
    build $m.orig.fp16 "$WORK/models/$m.onnx"
    build $m.orig_mp.fp16 "$WORK/models/$m.onnx" --model-pruning
    [ "${INT8:-0}" = 1 ] && build $m.orig.int8 "$WORK/models/$m.onnx" --int8 --calibration 2 \
        && build $m.orig_mp.int8 "$WORK/models/$m.onnx" --int8 --calibration 2 --model-pruning
    for f in "$WORK"/cuts/$m.*.onnx; do
        v=$(basename "$f" .onnx)
        build $v.fp16 "$f"
        [ "${INT8:-0}" = 1 ] && build $v.int8 "$f" --int8 --calibration 2
    done
done

"$RKNN_PY" - "$WORK/res" <<'EOF'
import json, pathlib, sys
print("| build | .rknn MB | Mcycles | layers | CPU ops | layer types |")
print("|---|---|---|---|---|---|")
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    r = json.loads(path.read_text())
    if "error" in r:
        print(f"| {path.stem} | {r['error']} | | | | |")
        continue
    print(f"| {path.stem} | {r['rknn_bytes'] / 1e6:.3f} | {r['cycles'] / 1e6:.3f} | "
          f"{r['layers']} | {r['cpu_ops_unknown']} | {r['op_types']} |")
EOF
