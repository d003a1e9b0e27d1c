"""Interop (issue 11): cut models built by the real RKNN-Toolkit2 compiler and run by its PC
simulator, against ONNX Runtime on the uncut original; the .rknn never larger than the uncut
model's and no layer on the CPU.

Runs only where `rknn.api` imports, i.e. in RKNN-Toolkit2's own environment (its pins clash with
channelcut's: numpy<=1.26.4, onnx<=1.18), skipped elsewhere:

    bash bench/rknn_env.sh /tmp/rknn-venv            # the toolkit (idempotent)
    bash bench/rknn_channelcut.sh /tmp/rknn-venv     # channelcut and pytest into it
    /tmp/rknn-venv/bin/python -m pytest -q tests/test_rknn_interop.py

Each build runs in a child process (bench/rknn_build.py: the compiler prints to the file
descriptors, the figures come from its log); the 3 graphs x (original, rknn, portable) take
about a minute.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

pytest.importorskip("rknn.api")

import channelcut  # noqa: E402 - after the skip
from builders import bias, conv, model, relu, weights  # noqa: E402
from test_fold import basic_block  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import rknn_build  # noqa: E402

# fp16 tolerance. The simulator computes in fp16 (unit roundoff u = 2^-11 = 4.9e-4): the input,
# every weight and every layer's output are rounded once, and accumulation is wider, so each of
# the <= 3 layers of these graphs adds an error of about u of its range; measured, the largest
# element error is 4.3e-4 .. 5.9e-4 of the output's largest magnitude (about 1.2 u), the same for
# the uncut and the cut builds. 5e-3 (10 u) leaves room for other inputs and platforms and is
# still far below what one wrong channel gives (test_max_rel_error_sees_a_wrong_channel: a
# zeroed channel of 64 is an error of the order of the output's range).
COSINE = 0.999
MAX_REL_ERROR = 5e-3
TARGETS = ("rknn", "portable")


def demo() -> onnx.ModelProto:
    """The seed's pruned network (channelcut.rknn.demo), exported at 32x32 to keep builds short: its
    constant channels are read by padded convs (carrier folds)."""
    from channelcut.rknn import demo as seed
    from channelcut.pytorch import to_onnx

    return to_onnx(seed.pruned_net(), [[1, 3, 32, 32]])


def residual() -> onnx.ModelProto:
    """A ResNet basic block with 16 of 64 rows of its second conv zeroed (positive bias): a
    one-sided residual cut, reinserted (rknn: as one 1x1 conv with one-hot weights)."""
    return basic_block(zero_rows=range(16), channels=64, size=16)


def bias_and_border() -> onnx.ModelProto:
    """9 of 24 channels constant, read by an unpadded 1x1 conv (bias fold) and a padded 3x3 conv
    (carrier fold: one stays, so 16 are kept, aligned for portable too)."""
    constant = [1, 4, 9, 12, 17, 20, 21, 22, 23]
    inits = {"w1": weights(24, 8, 1, 1, zero_rows=constant),
             "b1": bias(24, {r: 0.1 + 0.05 * k for k, r in enumerate(constant)}),
             "w2": weights(16, 24, 1, 1, seed=3), "b2": bias(16, seed=3),
             "w3": weights(16, 24, 3, 3, seed=4)}
    nodes = [conv("x", "w1", "c1", "b1"), relu("c1", "r1"), conv("r1", "w2", "y2", "b2"),
             conv("r1", "w3", "y3", pads=1)]
    return model(nodes, {"x": [1, 8, 16, 16]}, ["y2", "y3"], inits)


GRAPHS = {"demo": demo, "residual": residual, "bias_and_border": bias_and_border}
# What each target's cut makes of each graph (an empty list: nothing cut, the original built).
SITES = {("demo", "rknn"): {"carrier fold"}, ("demo", "portable"): {"carrier fold"},
         ("residual", "rknn"): {"reinsert"}, ("residual", "portable"): set(),
         ("bias_and_border", "rknn"): {"bias fold", "carrier fold"},
         ("bias_and_border", "portable"): {"bias fold", "carrier fold"}}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rknn_interop")


@pytest.fixture(scope="module")
def originals(workdir: Path) -> dict[str, tuple[Path, dict]]:
    """Each graph saved and built uncut (fp16, simulated): its path and figures."""
    built = {}
    for name, make in GRAPHS.items():
        path = workdir / f"{name}.onnx"
        onnx.save(make(), str(path))
        built[name] = (path, rknn_build.measure(path, "--simulate"))
    return built


def assert_runs_on_the_npu(figures: dict, what: str) -> None:
    assert "error" not in figures, f"{what}: {figures.get('error')} {figures.get('log_tail')}"
    assert figures["table_found"], f"{what}: no layer table in the build log"
    assert figures["cpu_layers"] == [] and figures["cpu_ops_unknown"] == 0, \
        f"{what}: layers on the CPU: {figures['cpu_layers']}"
    assert min(figures["cosine"]) >= COSINE, f"{what}: cosine {figures['cosine']}"
    assert max(figures["max_rel_error"]) <= MAX_REL_ERROR, \
        f"{what}: max rel. error {figures['max_rel_error']}"


@pytest.mark.parametrize("name", GRAPHS)
def test_uncut_graph_builds_on_the_npu(originals, name):
    """The reference itself: compiled whole onto the NPU, simulator within fp16 of ORT."""
    assert_runs_on_the_npu(originals[name][1], f"{name} uncut")


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", GRAPHS)
def test_cut_builds_on_the_npu_matches_the_original_and_is_never_larger(originals, workdir,
                                                                         name, target):
    original_path, original = originals[name]
    result = channelcut.cut(onnx.load(str(original_path)), target=target)  # verified in ORT
    assert {s.kind for s in result.report.sites} == SITES[name, target]
    if not SITES[name, target]:  # nothing that pays without an added op: the original
        assert result.report.removed_channels == 0
    path = workdir / f"{name}_{target}.onnx"
    onnx.save(result.model, str(path))
    # The simulator's outputs of the cut model against ONNX Runtime's of the uncut original.
    figures = rknn_build.measure(path, "--simulate", "--reference", str(original_path))
    assert_runs_on_the_npu(figures, f"{name} cut for {target}")
    assert figures["rknn_bytes"] <= original["rknn_bytes"], (
        f"{name} cut for {target}: {figures['rknn_bytes']} bytes, uncut {original['rknn_bytes']}")
    assert figures["cycles"] <= original["cycles"], (
        f"{name} cut for {target}: {figures['cycles']} cycles, uncut {original['cycles']}")


def test_max_rel_error_sees_a_wrong_channel():
    """The bound is tight enough to catch a model that differs in one channel of 64."""
    rng = np.random.default_rng(0)
    want = rng.standard_normal((1, 64, 8, 8)).astype(np.float32)
    wrong = want.copy()
    wrong[0, 5] = 0.0
    assert rknn_build._max_rel_error(want, want.astype(np.float16)) <= MAX_REL_ERROR
    assert rknn_build._max_rel_error(want, wrong) > MAX_REL_ERROR
