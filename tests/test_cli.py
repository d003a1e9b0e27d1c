"""The `channelcut` console script: cut, inspect, demo, bad input, exit codes, report text."""

from __future__ import annotations

import io as stdio
import json
import os
import subprocess
import sys
import types

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from rich.console import Console

import channelcut
import channelcut.rknn
from channelcut import api, cli
from channelcut.errors import ChannelcutError, VerificationError
from channelcut.render import plain_lines, print_report
from channelcut.report import Blocker, ConstChange, LayerChange, OutputCheck, Report

from builders import dead_channel_model


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "in.onnx"
    path.write_bytes(dead_channel_model().SerializeToString())
    return path


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("channelcut: error: ")
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0]


def section(out: str, title: str) -> list[str]:
    """The lines under a section title, up to the next blank line."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start + 1:end]


def const_rows(out: str) -> dict[str, tuple[str, str, list[int]]]:
    """The const change table: name -> (layer, role, [src_size, pruned_size, diff]); rows are
    indented under a line naming their layer."""
    rows, layer = {}, None
    for line in section(out, "const change detail")[1:]:
        if not line.startswith("  "):
            layer = line
            continue
        name, *role, src, pruned, diff = line.split()
        rows[name] = (layer, " ".join(role), [int(src), int(pruned), int(diff)])
    return rows


def run_ort(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


# --- bad input: one line on stderr, exit 2, nothing written, input untouched -------------------

def test_missing_input(capsys, tmp_path):
    code, out, err = run_cli(capsys, "cut", tmp_path / "absent.onnx", "-o", tmp_path / "o.onnx")
    assert code == cli.EXIT_USER_ERROR and out == ""
    assert_one_line_error(err, "absent.onnx", "no such file")
    assert os.listdir(tmp_path) == []


def test_same_input_and_output(capsys, model_file):
    before = model_file.read_bytes()
    code, _, err = run_cli(capsys, "cut", model_file, "-o", model_file)
    assert code == cli.EXIT_USER_ERROR
    assert_one_line_error(err, "in.onnx", "input model")
    assert model_file.read_bytes() == before


def test_missing_output_directory(capsys, model_file, tmp_path):
    code, _, err = run_cli(capsys, "cut", model_file, "-o", tmp_path / "nodir" / "o.onnx")
    assert code == cli.EXIT_USER_ERROR
    assert_one_line_error(err, "nodir", "does not exist")
    assert os.listdir(tmp_path) == ["in.onnx"]


def test_report_json_in_missing_directory(capsys, model_file, tmp_path):
    code, _, err = run_cli(capsys, "cut", model_file, "-o", tmp_path / "o.onnx",
                           "--report-json", tmp_path / "nodir" / "r.json")
    assert code == cli.EXIT_USER_ERROR
    assert_one_line_error(err, "nodir")
    assert os.listdir(tmp_path) == ["in.onnx"]


def test_report_json_same_as_output(capsys, model_file, tmp_path):
    out_path = tmp_path / "o.onnx"
    code, _, err = run_cli(capsys, "cut", model_file, "-o", out_path, "--report-json", out_path)
    assert code == cli.EXIT_USER_ERROR
    assert_one_line_error(err, "o.onnx")
    assert os.listdir(tmp_path) == ["in.onnx"]


@pytest.mark.parametrize("shape", ["x", "x:1,three,8,8", "x:1,-3,8,8"])
def test_malformed_input_shape(capsys, model_file, tmp_path, shape):
    code, _, err = run_cli(capsys, "cut", model_file, "-o", tmp_path / "o.onnx",
                           "--input-shape", shape)
    assert code == cli.EXIT_USER_ERROR
    assert_one_line_error(err, "--input-shape")
    assert os.listdir(tmp_path) == ["in.onnx"]


def test_input_shape_given_twice(capsys, model_file, tmp_path):
    code, _, err = run_cli(capsys, "cut", model_file, "-o", tmp_path / "o.onnx",
                           "--input-shape", "x:1,3,8,8", "--input-shape", "x:2,3,8,8")
    assert code == cli.EXIT_USER_ERROR
    assert_one_line_error(err, "given twice")


def test_threshold_out_of_range(capsys, model_file, tmp_path):
    code, _, err = run_cli(capsys, "cut", model_file, "-o", tmp_path / "o.onnx",
                           "--threshold", "1.5")
    assert code == cli.EXIT_USER_ERROR
    assert_one_line_error(err, "--threshold")


@pytest.mark.parametrize("threshold", ["0", "-1", "nan", "1.0001"])
def test_threshold_outside_0_1_writes_nothing(capsys, model_file, tmp_path, threshold):
    out = tmp_path / "o.onnx"
    code, _, err = run_cli(capsys, "cut", model_file, "-o", out, f"--threshold={threshold}")
    assert code == cli.EXIT_USER_ERROR
    assert_one_line_error(err, "--threshold", "(0, 1]")
    assert not out.exists()


def test_threshold_1_accepts_outputs_equal_up_to_rounding(capsys, tmp_path):
    from test_api import rounding_model  # noqa: PLC0415

    model_path, out = tmp_path / "in.onnx", tmp_path / "o.onnx"
    model_path.write_bytes(rounding_model().SerializeToString())
    code, _, err = run_cli(capsys, "cut", model_path, "-o", out, "--threshold", "1", "-q")
    assert (code, err) == (cli.EXIT_OK, "")
    assert out.exists()


def test_no_command_and_usage_errors(capsys):
    assert cli.main([]) == cli.EXIT_USER_ERROR
    assert "give a command" in capsys.readouterr().err
    assert cli.main(["cut"]) == cli.EXIT_USER_ERROR  # argparse: -o and IN.onnx missing
    assert "required" in capsys.readouterr().err
    assert cli.main(["--version"]) == 0
    assert "channelcut" in capsys.readouterr().out


def test_console_script_module_prints_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "channelcut.cli", "cut", str(tmp_path / "absent.onnx"), "-o",
         str(tmp_path / "o.onnx")],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2
    assert_one_line_error(proc.stderr, "absent.onnx")


def test_model_with_inconsistent_types_gets_warnings_and_one_error_no_traceback(tmp_path):
    # float64 weights for a float32 input: ONNX's shape inference and ONNX Runtime both refuse
    bad = dead_channel_model()
    for tensor in bad.graph.initializer:
        tensor.CopyFrom(numpy_helper.from_array(
            numpy_helper.to_array(tensor).astype(np.float64), tensor.name))
    path = tmp_path / "in.onnx"
    onnx.save(bad, str(path))
    proc = subprocess.run(
        [sys.executable, "-m", "channelcut.cli", "cut", str(path), "-o", str(tmp_path / "o.onnx")],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    *warnings, error = proc.stderr.strip().splitlines()
    assert warnings and all("ONNX shape inference failed" in w for w in warnings)
    assert_one_line_error(error, "does not run in ONNX Runtime")
    assert sorted(os.listdir(tmp_path)) == ["in.onnx"]


def test_closed_stdout_is_not_an_internal_error(model_file):
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will read: every write to stdout fails with EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "channelcut.cli", "inspect", str(model_file)],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)
    finally:
        os.close(write_end)
    assert proc.returncode == cli.EXIT_BROKEN_PIPE, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr


# --- bad input found while loading (needs the core's cut() to load the model) -----------------

@pytest.mark.parametrize("content", [b"not an onnx model\n", None])
def test_not_onnx_or_truncated(capsys, tmp_path, content):
    path = tmp_path / "in.onnx"
    data = dead_channel_model().SerializeToString()
    path.write_bytes(content if content is not None else data[: len(data) // 2])
    before = path.read_bytes()
    code, out, err = run_cli(capsys, "cut", path, "-o", tmp_path / "o.onnx")
    assert code == cli.EXIT_USER_ERROR and out == ""
    assert_one_line_error(err, "in.onnx", "ONNX")
    assert os.listdir(tmp_path) == ["in.onnx"] and path.read_bytes() == before


def _swap_nodes_0_1(m: onnx.ModelProto) -> None:
    first, second = onnx.NodeProto(), onnx.NodeProto()
    first.CopyFrom(m.graph.node[0])
    second.CopyFrom(m.graph.node[1])
    m.graph.node[0].CopyFrom(second)
    m.graph.node[1].CopyFrom(first)


def _set_dims(m: onnx.ModelProto, dims: list[int]) -> None:
    for dim, value in zip(m.graph.input[0].type.tensor_type.shape.dim, dims):
        dim.dim_value = value


INVALID_MODELS = [  # (id, how the dead-channel model is broken, words the error line has)
    ("negative dim", lambda m: _set_dims(m, [1, 3, -8, 8]), ["'x'", "dim 2 as -8"]),
    ("two producers", lambda m: m.graph.node[1].output.__setitem__(0, "h"),
     ["node 'relu' writes 'h'", "node 'conv1' writes too"]),
    ("writes a graph input", lambda m: m.graph.node[1].output.__setitem__(0, "x"),
     ["node 'relu' writes 'x'", "graph input"]),
    ("duplicate initializer", lambda m: m.graph.initializer.append(m.graph.initializer[0]),
     ["not a valid ONNX model", "w1 initializer name is not unique"]),
    ("not topologically sorted", _swap_nodes_0_1, ["must be topologically sorted", "relu"]),
    ("IR version without initializer inputs", lambda m: setattr(m, "ir_version", 3),
     ["not a valid ONNX model", "w1 in initializer but not in graph input"]),
    ("unknown standard op", lambda m: setattr(m.graph.node[1], "op_type", "Frobnicate"),
     ["No Op registered for Frobnicate"]),
]


@pytest.mark.parametrize("breaks, words", [c[1:] for c in INVALID_MODELS],
                         ids=[c[0] for c in INVALID_MODELS])
def test_an_invalid_model_is_refused_at_load(capsys, tmp_path, breaks, words):
    m = dead_channel_model()
    breaks(m)
    path = tmp_path / "in.onnx"
    path.write_bytes(m.SerializeToString())
    for command in (["cut", path, "-o", tmp_path / "o.onnx"], ["inspect", path]):
        code, out, err = run_cli(capsys, *command)
        assert code == cli.EXIT_USER_ERROR and out == ""
        assert_one_line_error(err, "in.onnx", *words)
        assert os.listdir(tmp_path) == ["in.onnx"]


@pytest.mark.parametrize("field", ["name", "op_type"])
def test_a_node_name_or_op_type_that_is_not_utf8_is_refused(capsys, tmp_path, field):
    m = dead_channel_model()
    setattr(m.graph.node[1], field, "QQQQ")
    path = tmp_path / "in.onnx"
    path.write_bytes(m.SerializeToString().replace(b"QQQQ", b"R\xffl\xfe"))  # same length
    code, out, err = run_cli(capsys, "cut", path, "-o", tmp_path / "o.onnx")
    assert code == cli.EXIT_USER_ERROR and out == ""
    assert_one_line_error(err, "in.onnx", f"the {field} of node 1 is not UTF-8 text")
    assert os.listdir(tmp_path) == ["in.onnx"]


def test_external_data_shorter_than_the_model_says(capsys, tmp_path):
    path = tmp_path / "in.onnx"
    onnx.save(dead_channel_model(), str(path), save_as_external_data=True,
              all_tensors_to_one_file=True, location="in.data", size_threshold=0)
    data = tmp_path / "in.data"
    data.write_bytes(data.read_bytes()[:-100])  # cuts into the last tensor
    code, out, err = run_cli(capsys, "cut", path, "-o", tmp_path / "o.onnx")
    assert code == cli.EXIT_USER_ERROR and out == ""
    assert_one_line_error(err, "in.onnx", "external data", "exceeds available data")
    assert sorted(os.listdir(tmp_path)) == ["in.data", "in.onnx"]


def test_inputs_too_large_to_allocate_are_refused_before_allocating(capsys, tmp_path):
    m = dead_channel_model()
    _set_dims(m, [1, 3, 2**20, 2**14])  # 384 GiB of float64 to draw
    path = tmp_path / "in.onnx"
    path.write_bytes(m.SerializeToString())
    code, out, err = run_cli(capsys, "cut", path, "-o", tmp_path / "o.onnx")
    assert code == cli.EXIT_USER_ERROR and out == ""
    assert_one_line_error(err, "'x' is [1,3,1048576,16384]", "--input-shape", "--no-verify")
    assert os.listdir(tmp_path) == ["in.onnx"]
    # the analysis itself allocates nothing of that size: without verification it cuts
    code, _, err = run_cli(capsys, "cut", path, "-o", tmp_path / "o.onnx", "--no-verify", "-q")
    assert code == cli.EXIT_OK, err


@pytest.mark.parametrize("shape, words", [
    ("x:1,3,8", ["'x'", "[?,3,8,8]"]),
    ("x:1,5,8,8", ["'x'", "[?,3,8,8]"]),
    ("images:1,3,8,8", ["'images'", "x"]),
])
def test_input_shape_that_does_not_match_the_model(capsys, model_file, tmp_path, shape, words):
    code, _, err = run_cli(capsys, "cut", model_file, "-o", tmp_path / "o.onnx",
                           "--input-shape", shape)
    assert code == cli.EXIT_USER_ERROR
    assert_one_line_error(err, *words)
    assert os.listdir(tmp_path) == ["in.onnx"]


# --- cut and inspect on a real model (need the core) ------------------------------------------

@pytest.mark.parametrize("constant", [False, True])
def test_weights_listed_as_inputs_are_cut_with_constant_initializers(capsys, tmp_path,
                                                                     constant):
    m = dead_channel_model()
    m.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                         for t in m.graph.initializer)
    in_path, out_path, json_path = (tmp_path / n for n in ("in.onnx", "o.onnx", "r.json"))
    onnx.save(m, in_path)
    flags = ["--constant-initializers"] if constant else []
    code, out, err = run_cli(capsys, "cut", in_path, "-o", out_path, "--report-json", json_path,
                             *flags)
    assert code == 0, err
    report = json.loads(json_path.read_text())
    assert report["initializer_inputs"] == ["w1", "b1", "w2", "b2"]
    assert report["constant_initializers"] is constant
    assert report["removed_channels"] == (2 if constant else 0)
    assert [v.name for v in onnx.load(out_path).graph.input] == \
        (["x"] if constant else ["x", "w1", "b1", "w2", "b2"])
    note = " ".join(section(out, "summary"))
    assert ("taken as constants" in note) is constant
    assert ("--constant-initializers" in note) is not constant  # what to do, when not given


def test_cut_removes_the_dead_channel(capsys, model_file, tmp_path):
    before = model_file.read_bytes()
    out_path, json_path = tmp_path / "o.onnx", tmp_path / "report.json"
    code, out, err = run_cli(capsys, "cut", model_file, "-o", out_path,
                             "--input-shape", "x:2,3,8,8", "--report-json", json_path)
    assert code == 0, err
    assert model_file.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["in.onnx", "o.onnx", "report.json"]

    assert const_rows(out) == {"w1": ("conv1", "weight", [432, 324, -108]),
                               "b1": ("conv1", "bias", [16, 12, -4]),
                               "w2": ("conv2", "weight", [288, 216, -72])}
    summary = dict(line.split(":", 1) for line in section(out, "summary") if ":" in line)
    assert summary["inputs"].strip() == "x 2x3x8x8"
    assert "MB (-" in summary["weights"] and "GFLOPs (-" in summary["FLOPs"]
    layers = {line.split()[0]: line.split()[1:] for line in section(out, "channels per layer")[1:]}
    assert layers["conv1"][:3] == ["Conv", "3/3", "3/4"]
    assert layers["conv2"][:3] == ["Conv", "3/4", "2/2"]
    [check_row] = section(out, "verification")[1:]
    name, cosine, max_abs, _ = check_row.split()
    assert name == "y" and float(cosine) >= 0.9999 and float(max_abs) < 1e-4
    assert out.splitlines()[-1] == f"wrote {out_path}"

    cut_model = onnx.load(str(out_path))
    w1 = next(t for t in cut_model.graph.initializer if t.name == "w1")
    assert list(w1.dims) == [3, 3, 3, 3]
    x = np.random.default_rng(5).standard_normal((3, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(run_ort(out_path, x), run_ort(model_file, x), atol=1e-5)

    report = json.loads(json_path.read_text())
    assert {c["name"]: (c["layer"], c["diff"]) for c in report["const_changes"]} == {
        "w1": ("conv1", -108), "b1": ("conv1", -4), "w2": ("conv2", -72)}
    assert report["checks"][0]["name"] == "y" and report["checks"][0]["cosine"] >= 0.9999
    assert report["weight_bytes_before"] - report["weight_bytes_after"] == 184


def test_cut_quiet_and_no_verify(capsys, model_file, tmp_path):
    code, out, err = run_cli(capsys, "cut", model_file, "-o", tmp_path / "o.onnx", "-q")
    assert (code, out, err) == (0, "", "")
    code, out, _ = run_cli(capsys, "cut", model_file, "-o", tmp_path / "o2.onnx", "--no-verify")
    assert code == 0
    assert "verification: not run" in out
    assert onnx.load(str(tmp_path / "o2.onnx")) == onnx.load(str(tmp_path / "o.onnx"))


def test_inspect_writes_nothing(capsys, model_file, tmp_path):
    code, out, err = run_cli(capsys, "inspect", model_file)
    assert code == 0, err
    assert os.listdir(tmp_path) == ["in.onnx"]
    assert const_rows(out)["w1"] == ("conv1", "weight", [432, 324, -108])
    assert "verification: not run" in out
    assert out.splitlines()[-1].startswith("would cut ")


def with_reader_of_relu(op_type: str, domain: str = "", extra_inputs=()) -> onnx.ModelProto:
    """The dead-channel model plus a second reader of the Relu output, as a graph output z."""
    model = dead_channel_model()
    model.graph.node.append(helper.make_node(op_type, ["r", *extra_inputs], ["z"], name="reader",
                                             domain=domain))
    model.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    if domain:
        model.opset_import.append(helper.make_opsetid(domain, 1))
    return model


def test_op_without_a_rule_is_a_blocker_not_an_error(capsys, tmp_path):
    path = tmp_path / "in.onnx"
    # TopK has no channel rule: it reads the dead channel, so the channel must stay.
    model = with_reader_of_relu("TopK", extra_inputs=["k"])
    model.graph.initializer.append(numpy_helper.from_array(np.array([2], dtype=np.int64), "k"))
    model.graph.node[-1].output.append("topk_indices")
    onnx.save(model, str(path))
    code, out, err = run_cli(capsys, "cut", path, "-o", tmp_path / "o.onnx")
    assert code == 0, err
    assert section(out, "const change detail")[1:] == []
    [blocker] = section(out, "blockers")[1:]
    assert blocker.split()[:3] == ["TopK", "reader", "1"]
    assert [row.split()[0] for row in section(out, "verification")[1:]] == ["y", "z"]


def test_unknown_domain_op_needs_no_verify(capsys, tmp_path):
    path = tmp_path / "in.onnx"
    onnx.save(with_reader_of_relu("MysteryOp", domain="acme"), str(path))
    code, _, err = run_cli(capsys, "cut", path, "-o", tmp_path / "o.onnx")
    assert code == cli.EXIT_USER_ERROR
    assert_one_line_error(err, "original model", "--no-verify")
    assert os.listdir(tmp_path) == ["in.onnx"]
    code, out, err = run_cli(capsys, "cut", path, "-o", tmp_path / "o.onnx", "--no-verify")
    assert code == 0, err
    [blocker] = section(out, "blockers")[1:]
    assert blocker.split()[:3] == ["MysteryOp", "reader", "1"]


def test_inspect_missing_file(capsys, tmp_path):
    code, out, err = run_cli(capsys, "inspect", tmp_path / "absent.onnx")
    assert code == cli.EXIT_USER_ERROR and out == ""
    assert_one_line_error(err, "absent.onnx")


# --- failures inside cut(): exit codes, nothing written ---------------------------------------

def test_verification_failure_writes_nothing(capsys, model_file, tmp_path, monkeypatch):
    def cut_that_fails_verification(*args, **kwargs):
        raise VerificationError("output 'y' of the cut model differs: cosine similarity 0.5")

    monkeypatch.setattr(api, "cut", cut_that_fails_verification)
    code, out, err = run_cli(capsys, "cut", model_file, "-o", tmp_path / "o.onnx",
                             "--report-json", tmp_path / "r.json")
    assert code == cli.EXIT_VERIFICATION and out == ""
    assert err.strip() == ("channelcut: verification failed: output 'y' of the cut model "
                           "differs: cosine similarity 0.5")
    assert os.listdir(tmp_path) == ["in.onnx"]


def test_cli_passes_options_to_cut(capsys, model_file, tmp_path, monkeypatch):
    seen = {}

    def fake_cut(model, **kwargs):
        seen.update(kwargs, model=model)
        raise ChannelcutError("stop here")

    monkeypatch.setattr(api, "cut", fake_cut)
    code, _, err = run_cli(capsys, "cut", model_file, "-o", tmp_path / "o.onnx", "--no-verify",
                           "--threshold", "0.99", "--input-shape", "x:2,3,8,8")
    assert code == cli.EXIT_USER_ERROR and err.strip() == "channelcut: error: stop here"
    stages = seen.pop("stages")
    assert seen == {"model": model_file, "input_shapes": {"x": [2, 3, 8, 8]}, "verify": False,
                    "threshold": 0.99, "fold": True, "objective": None, "align": None,
                    "target": "portable",  # the target decides objective and alignment
                    "verify_inputs": None, "verify_samples": None, "seed": 0,
                    "input_ranges": None, "constant_initializers": False}
    assert stages.listener is None  # stderr is not a terminal, and no -v
    run_cli(capsys, "inspect", model_file, "--zero-only", "--objective", "params", "--align", "8",
            "--target", "rknn")
    assert (seen["fold"], seen["objective"], seen["align"], seen["target"]) == (
        False, "params", 8, "rknn")


def test_internal_error_is_reported_as_a_bug(capsys, model_file, tmp_path, monkeypatch):
    def broken_cut(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(api, "cut", broken_cut)
    code, _, err = run_cli(capsys, "cut", model_file, "-o", tmp_path / "o.onnx")
    assert code == cli.EXIT_INTERNAL
    assert "Traceback" in err and "KeyError" in err
    assert err.strip().splitlines()[-1].startswith("channelcut: internal error")
    assert os.listdir(tmp_path) == ["in.onnx"]


# --- demo -------------------------------------------------------------------------------------

def fake_demo(monkeypatch, main) -> None:
    """Make the CLI's `from channelcut.rknn import demo` find a fake: once the real demo has
    been imported, that import takes the package attribute and never looks at sys.modules."""
    module = types.ModuleType("channelcut.rknn.demo")
    module.main = main
    monkeypatch.setitem(sys.modules, "channelcut.rknn.demo", module)
    monkeypatch.setattr(channelcut.rknn, "demo", module, raising=False)


def test_demo_passes_target_and_device(capsys, monkeypatch):
    calls = []
    fake_demo(monkeypatch, lambda argv: calls.append(argv) or 7)
    assert cli.main(["demo"]) == 7
    assert cli.main(["demo", "rk1808", "c3d9b8674f4b94f6"]) == 7
    assert calls == [[], ["rk1808", "c3d9b8674f4b94f6"]]


def test_demo_without_torch_says_how_to_install(capsys, monkeypatch):
    def needs_torch(argv):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    fake_demo(monkeypatch, needs_torch)
    code, _, err = run_cli(capsys, "demo")
    assert code == cli.EXIT_USER_ERROR
    assert_one_line_error(err, "torch", "pip install")


# --- report text ------------------------------------------------------------------------------

def sample_report() -> Report:
    return Report(
        const_changes=[ConstChange("conv.weight", 6912, 5184, "conv")],
        layers=[LayerChange("conv", "Conv", (3, 3), (64, 48), (2_000_000_000, 1_500_000_000))],
        blockers=[Blocker("Reshape", "reshape_1", 4, "reshape mixes channels with other axes"),
                  Blocker("graph output", "", 2, "output 'r' keeps its shape")],
        weight_bytes_before=16_000_000, weight_bytes_after=14_878_560,
        flops_before=2_000_000_000, flops_after=1_500_000_000,
        removed_groups=1, removed_channels=32,
        checks=[OutputCheck("logits", 0.99999994, 1.5e-6, 2.5e-7)],
    )


def test_plain_report_sections():
    lines = plain_lines(sample_report(), threshold=0.9999)
    text = "\n".join(lines)
    assert lines[0] == "summary"
    assert "weights:      16.00000 MB -> 14.87856 MB, -1.12144 MB (-7.0%)" in text
    assert "removed:      32 channel positions in 1 channel groups" in text
    assert section(text, "const change detail") == [
        "const name     role  src_size  pruned_size   diff",
        "conv",
        "  conv.weight  -         6912         5184  -1728"]
    assert "conv   Conv  3/3  48/64  1.50G/2.00G" in text
    assert section(text, "blockers") == [
        "op_type       layer      channels  reason",
        "Reshape       reshape_1         4  reshape mixes channels with other axes",
        "graph output  -                 2  output 'r' keeps its shape"]
    assert "verification (cosine threshold 0.9999)" in text
    assert "logits  0.9999999      1.500e-06      2.500e-07" in text


def test_plain_report_empty_sections():
    text = "\n".join(plain_lines(Report()))
    assert text.count("(none)") == 4  # layers, consts, folds and blockers
    assert text.endswith("verification: not run")


def test_rich_report_has_the_same_numbers():
    buffer = stdio.StringIO()
    print_report(sample_report(), Console(file=buffer, width=160, color_system=None),
                 threshold=0.9999)
    text = buffer.getvalue()
    for expected in ("const change detail", "conv.weight", "-1728", "-1.12144 MB (-7.0%)",
                     "48/64", "reshape_1", "0.9999999", "1.500e-06"):
        assert expected in text


def test_rich_report_of_an_empty_cut():
    buffer = stdio.StringIO()
    print_report(Report(), Console(file=buffer, width=160, color_system=None))
    text = buffer.getvalue()
    assert text.count("(none)") == 4  # layers, consts, folds, blockers: no empty tables
    assert text.rstrip().endswith("verification: not run")


def test_flops_of_nodes_of_unknown_shape_are_reported_unknown(capsys, tmp_path):
    # ONNX infers no shape for ORT's com.microsoft Gelu, so neither it nor conv_b can be
    # counted: FLOPs are a lower bound (conv_a's 2 * 4*6*6 * 3*3*3 and the Relu's 6*6*6, whose
    # output shape the graph declares), and their change is not printed as a number.
    from builders import conv, model, node, weights

    m = model([conv("x", "wa", "a"), node("Gelu", ["a"], ["g"], domain="com.microsoft"),
               conv("g", "wb", "b"), node("Relu", ["b"], ["z"])],
              {"x": [1, 3, 8, 8]}, {"z": [1, 6, 6, 6]},
              {"wa": weights(4, 3, 3, 3), "wb": weights(6, 4, 1, 1, seed=1)},
              extra_opsets={"com.microsoft": 1}, check=False)
    path, json_path = tmp_path / "custom.onnx", tmp_path / "report.json"
    path.write_bytes(m.SerializeToString())
    code, out, err = run_cli(capsys, "cut", path, "-o", tmp_path / "o.onnx",
                             "--report-json", json_path)
    assert code == 0, err
    report = json.loads(json_path.read_text())
    assert (report["flops_before"], report["flops_unknown_before"]) == (2 * 144 * 27 + 216, 2)
    assert (report["flops_after"], report["flops_unknown_after"]) == (2 * 144 * 27 + 216, 2)
    summary = " ".join(" ".join(section(out, "summary")).split())
    assert ("FLOPs: >= 0.00001 G (2 nodes of unknown shape) -> >= 0.00001 G (2 nodes of unknown "
            "shape), change unknown") in summary



def test_dynamic_spatial_dims_get_one_warning_line_with_the_flag(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    model = dead_channel_model()
    model.graph.input[0].CopyFrom(x)
    del model.graph.output[0].type.tensor_type.shape.dim[2:]
    model.graph.output[0].type.tensor_type.shape.dim.add().dim_param = "H"
    model.graph.output[0].type.tensor_type.shape.dim.add().dim_param = "W"
    path = tmp_path / "in.onnx"
    onnx.save(model, str(path))
    proc = subprocess.run(
        [sys.executable, "-m", "channelcut.cli", "cut", str(path), "-o", str(tmp_path / "o.onnx")],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    [warning] = proc.stderr.strip().splitlines()
    assert warning.startswith("channelcut: WARNING: dynamic input dims taken as 1: 'x' N, H, W")
    assert "--input-shape x:N,3,H,W" in warning and "input_shapes" not in warning
    assert any(line.startswith("note:") and "dynamic input dims" in line
               for line in proc.stdout.splitlines())


def test_an_original_that_cannot_run_at_the_assumed_size_says_how_to_set_it(capsys, tmp_path):
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    graph = helper.make_graph(  # an unpadded 3x3 conv cannot run on a 1x1 image
        [helper.make_node("Conv", ["x", "w"], ["y"])], "valid",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    path = tmp_path / "in.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    code, _, err = run_cli(capsys, "cut", path, "-o", tmp_path / "o.onnx")
    assert code == cli.EXIT_USER_ERROR
    assert_one_line_error(err, "does not run", "'x' 1x3x1x1", "--input-shape x:1,3,H,W",
                          "--no-verify")
    assert os.listdir(tmp_path) == ["in.onnx"]
