"""The seed's pruning demo: its exact const change table and cos sim, from all three entry points.

These run the real 1x3x224x224 network, as the seed does; each run takes a few seconds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import numpy as np  # noqa: E402 - after the torch skip
from onnx import load, numpy_helper  # noqa: E402

import channelcut  # noqa: E402
from channelcut.rknn import demo  # noqa: E402
from channelcut.api import cut  # noqa: E402
from channelcut.pytorch import to_onnx  # noqa: E402
from channelcut.rknn import RKNN  # noqa: E402
from channelcut.rknn import toolkit  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.* is deprecated:DeprecationWarning")


@pytest.fixture(autouse=True)
def simulator_backend(monkeypatch):
    """These tests are the ONNX Runtime simulator's, even where RKNN-Toolkit2 is installed."""
    monkeypatch.setattr(toolkit, "available", lambda: False)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "model_pruning" / "test.py"
# The seed's table (src_size, pruned_size), in bytes; block3's bias feeds the model output,
# so it keeps all its channels and is not in the table.
SEED_TABLE = {
    "block1 conv weight": (6912, 5184),
    "block1 conv bias": (256, 192),
    "block2 conv weight": (16384, 9024),
    "block2 conv bias": (256, 188),
    "block3 conv weight": (65536, 48128),
}
MIN_COS_SIM = 0.9999999
# Subprocesses import the same channelcut as this test run, installed or not.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    [str(Path(channelcut.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}


def table_rows(lines: list[str]) -> list[tuple[int, int]]:
    """(src_size, pruned_size) of each row of the pruning log's const change table."""
    start = lines.index("I Pruning: const change detail")
    assert lines[start + 1].split() == ["I", "const", "name", "src_size", "pruned_size", "diff"]
    rows = []
    for line in lines[start + 2:]:
        if not re.match(r"I \S+\s+\d+\s+\d+\s+-?\d+\s*$", line):
            break
        rows.append(tuple(int(v) for v in line.split()[2:4]))
    assert lines[start + 2 + len(rows)].startswith("I weights: ")
    return rows


def check_demo_output(out: str) -> None:
    """The pruning log has exactly the seed's five rows, and cos sim is printed and high."""
    lines = out.splitlines()
    assert Counter(table_rows(lines)) == Counter(SEED_TABLE.values())
    (cos_line,) = [line for line in lines if line.startswith("cos sim: ")]
    assert float(cos_line.split()[-1]) >= MIN_COS_SIM
    assert "Traceback" not in out


def test_pruning_gives_the_seed_sizes_for_each_block(tmp_path):
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.trace(demo.pruned_net(), torch.randn(1, 3, 224, 224)), str(path))
    model = to_onnx(path, [[1, 3, 224, 224]])
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    assert len(convs) == 3  # BatchNorm folded into each conv
    constant = {f"block{i} conv {part}": conv.input[index]
                for i, conv in enumerate(convs, 1) for index, part in ((1, "weight"), (2, "bias"))}
    # fold=False: RKNN-Toolkit's model_pruning, which the seed's table comes from.
    result = cut(model, input_shapes={"input0": [1, 3, 224, 224]}, fold=False)
    changes = {c.name: (c.src_size, c.pruned_size) for c in result.report.const_changes}
    assert {label: changes.get(name) for label, name in constant.items()} == {
        **SEED_TABLE, "block3 conv bias": None}
    assert min(check.cosine for check in result.report.checks) >= MIN_COS_SIM


# One fold or reinsertion of the full cut, as the facade logs it in verbose mode.
SITE_LINE = re.compile(r"I Pruning: (bias fold|border fold|reinsert) at \S+ \(\w+\): groups \d+"
                       r"(, (added|saved)_\w+ -?\d+){4}$")


def facade_run(model_path: Path, image: np.ndarray, model_pruning: bool | str,
               export_path: Path) -> np.ndarray:
    """The seed's facade calls with this model_pruning; the simulator's output."""
    rknn = RKNN(verbose=True)
    assert rknn.config(model_pruning=model_pruning, target_platform=["rv1126"]) == 0
    assert rknn.load_pytorch(model=str(model_path), input_size_list=[demo.INPUT_SIZE]) == 0
    assert rknn.build(do_quantization=False) == 0
    assert rknn.export_onnx(export_path) == 0
    assert rknn.init_runtime() == 0
    outputs = rknn.inference(inputs=[image.transpose(0, 2, 3, 1)])  # NHWC, as the demo feeds
    assert rknn.release() == 0
    return outputs[0]


def weight_bytes(path: Path) -> int:
    return sum(numpy_helper.to_array(t).nbytes for t in load(str(path)).graph.initializer)


def test_facade_zero_only_gives_the_seed_table_and_offers_the_aligned_cut(tmp_path, capsys):
    net, x = demo.pruned_net(), torch.randn(1, *demo.INPUT_SIZE)
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.trace(net, x), str(path))
    with torch.no_grad():
        expected = net(x).numpy()

    zero_out = facade_run(path, x.numpy(), True, tmp_path / "zero.onnx")
    lines = capsys.readouterr().out.splitlines()
    assert Counter(table_rows(lines)) == Counter(SEED_TABLE.values())
    assert not [line for line in lines if SITE_LINE.match(line)]
    assert demo.cos_sim(expected, zero_out) >= MIN_COS_SIM
    # RKNN-Toolkit2 aligns only Concat inputs (the demo has none): nothing to gain
    assert not [line for line in lines if line.startswith("I aligned as rknn")]

    aligned_out = facade_run(path, x.numpy(), "aligned", tmp_path / "aligned.onnx")
    lines = capsys.readouterr().out.splitlines()
    assert Counter(table_rows(lines)) == Counter(SEED_TABLE.values())
    assert demo.cos_sim(expected, aligned_out) >= MIN_COS_SIM

    # The demo's constant channels are read by padded convs: a border map would be a
    # full-size constant on the NPU, so the NPU's full cut keeps one constant channel per
    # tensor and folds the others into its weight column (a carrier fold).
    full_out = facade_run(path, x.numpy(), "full", tmp_path / "full.onnx")
    lines = capsys.readouterr().out.splitlines()
    assert weight_bytes(tmp_path / "full.onnx") < weight_bytes(tmp_path / "zero.onnx")
    assert demo.cos_sim(expected, full_out) >= 0.99999
    assert table_rows(lines) and not [line for line in lines if "border fold" in line]
    assert [line for line in lines if line.startswith("I Pruning: carrier fold at ")]


def test_demo_main_prints_the_seed_table_and_cos_sim(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert demo.main([]) == 0
    out = capsys.readouterr().out
    check_demo_output(out)
    assert "W target rv1126: no Rockchip NPU is reachable here" in out
    assert os.listdir(tmp_path) == []  # the TorchScript and .rknn files went to a temp dir


def test_channelcut_demo_console_script_with_target_and_device(tmp_path):
    script = Path(sys.executable).with_name("channelcut")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "channelcut.cli"]
    done = subprocess.run([*command, "demo", "rk1808", "c3d9b8674f4b94f6"], cwd=tmp_path,
                          capture_output=True, text=True, check=False, env=ENV)
    assert done.returncode == 0, done.stderr
    check_demo_output(done.stdout)
    assert "W target rk1808 (device c3d9b8674f4b94f6): no Rockchip NPU" in done.stdout


def test_the_example_script_runs_the_demo(tmp_path):
    done = subprocess.run([sys.executable, str(EXAMPLE)], cwd=tmp_path, capture_output=True,
                          text=True, check=False, env=ENV)
    assert done.returncode == 0, done.stderr
    check_demo_output(done.stdout)


def test_the_example_script_prints_its_usage_for_three_arguments(tmp_path):
    done = subprocess.run([sys.executable, str(EXAMPLE), "rv1126", "id", "extra"],
                          cwd=tmp_path, capture_output=True, text=True, check=False, env=ENV)
    assert done.returncode == 2
    assert done.stdout == "Usage: python test.py [target] [device_id]\n"


def test_demo_main_usage_and_unknown_target(capsys):
    assert demo.main(["a", "b", "c"]) == 2
    assert capsys.readouterr().out == "Usage: channelcut demo [target] [device_id]\n"
    assert demo.main(["rk9999"]) == 2
    out = capsys.readouterr().out
    errors = [line for line in out.splitlines() if line.startswith("E ")]
    assert len(errors) == 1 and "rv1126" in errors[0] and "Traceback" not in out
