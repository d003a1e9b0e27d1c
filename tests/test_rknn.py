"""The RKNN-Toolkit style facade: every method, return codes, log lines and bad input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

torch = pytest.importorskip("torch")
nn = torch.nn

from channelcut.rknn import RKNN, TARGETS  # noqa: E402 - after the torch skip
from channelcut.rknn import toolkit  # noqa: E402
from builders import dead_channel_model  # noqa: E402

# The tests save TorchScript files as users do; torch 2.13 calls that API deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.* is deprecated:DeprecationWarning")


@pytest.fixture(autouse=True)
def simulator_backend(monkeypatch):
    """These tests are the ONNX Runtime simulator's, even where RKNN-Toolkit2 is installed."""
    monkeypatch.setattr(toolkit, "available", lambda: False)

SIZE = [3, 16, 16]
# conv1 has 8 filters, 4 of them zero with bias -1: ReLU zeroes those channels for any input,
# so they and conv2's matching input channels go. Sizes in bytes, before -> after:
CUT_SIZES = sorted([(8 * 3 * 3 * 3 * 4, 4 * 3 * 3 * 3 * 4), (8 * 4, 4 * 4), (4 * 8 * 4, 4 * 4 * 4)])


def pruned_module() -> nn.Module:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                           nn.Conv2d(8, 4, 1))
    with torch.no_grad():
        module[0].weight[::2] = 0.0
        module[0].bias[::2] = -1.0
    return module.eval()


def traced_module() -> nn.Module:
    """The pruned module as a ScriptModule: exported by the fast TorchScript exporter."""
    return torch.jit.trace(pruned_module(), torch.zeros(1, *SIZE))


def torch_out(image_nchw: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return pruned_module()(torch.from_numpy(image_nchw.astype(np.float32))).numpy()


@pytest.fixture
def torchscript_file(tmp_path):
    path = tmp_path / "model.pt"
    torch.jit.save(traced_module(), str(path))
    return path


@pytest.fixture
def onnx_file(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(dead_channel_model().SerializeToString())
    return path


@pytest.fixture
def image() -> np.ndarray:
    """A raw NHWC uint8 image, as a camera gives it."""
    return np.random.default_rng(1).integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)


def built(model: Any = None, verbose: bool = False, **config: Any) -> RKNN:
    rknn = RKNN(verbose=verbose)
    assert rknn.config(**config) == 0
    assert rknn.load_pytorch(model if model is not None else traced_module(), [SIZE]) == 0
    assert rknn.build(do_quantization=False) == 0
    return rknn


def running(model: Any = None, **config: Any) -> RKNN:
    rknn = built(model, **config)
    assert rknn.init_runtime() == 0
    return rknn


def lines_of(capsys) -> list[str]:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return captured.out.splitlines()


def nchw(image: np.ndarray) -> np.ndarray:
    return image.transpose(0, 3, 1, 2)


# --- the seed's flow -----------------------------------------------------------------------

def test_torchscript_file_flow_prunes_logs_the_table_and_matches_pytorch(torchscript_file, image,
                                                                     tmp_path, capsys):
    rknn = RKNN(verbose=True)
    assert rknn.config(model_pruning=True, target_platform=["rv1126"]) == 0
    assert rknn.load_pytorch(model=str(torchscript_file), input_size_list=[SIZE]) == 0
    assert rknn.build(do_quantization=False) == 0
    lines = lines_of(capsys)
    start = lines.index("I Pruning: const change detail")
    assert lines[start + 1].split() == ["I", "const", "name", "src_size", "pruned_size", "diff"]
    rows = [line.split() for line in lines[start + 2:start + 5]]
    assert sorted((int(r[2]), int(r[3])) for r in rows) == CUT_SIZES
    assert all(int(r[4]) == int(r[3]) - int(r[2]) for r in rows)
    assert lines[start + 5].startswith("I weights: ") and lines[start + 6].startswith("I FLOPs: ")

    assert rknn.export_rknn(str(tmp_path / "model.rknn")) == 0
    assert rknn.init_runtime(target="rv1126") == 0
    outputs = rknn.inference(inputs=[image])
    np.testing.assert_allclose(outputs[0], torch_out(nchw(image)), rtol=1e-4, atol=1e-4)
    assert rknn.release() == 0


def test_nn_module_load_gives_the_same_outputs(image):
    outputs = running(pruned_module(), model_pruning=True).inference([image])
    np.testing.assert_allclose(outputs[0], torch_out(nchw(image)), rtol=1e-4, atol=1e-4)


def test_without_pruning_nothing_is_cut_and_no_table_is_logged(tmp_path, capsys):
    rknn = built(verbose=True)
    assert rknn.export_onnx(tmp_path / "m.onnx") == 0
    sizes = sorted(t.ByteSize() for t in onnx.load(tmp_path / "m.onnx").graph.initializer)
    assert len(sizes) == 4
    assert "I Pruning: const change detail" not in lines_of(capsys)


@pytest.mark.parametrize("model_pruning", ["full", "FULL"])
def test_full_pruning_matches_pytorch(model_pruning, image):
    rknn = running(model_pruning=model_pruning, pruning_objective="params")
    outputs = rknn.inference([image])
    np.testing.assert_allclose(outputs[0], torch_out(nchw(image)), rtol=1e-4, atol=1e-4)


def test_info_lines_only_when_verbose(capsys):
    built(model_pruning=True, verbose=False)
    assert not [line for line in lines_of(capsys) if line.startswith("I ")]
    built(model_pruning=True, verbose=True)
    assert [line for line in lines_of(capsys) if line.startswith("I ")]


def test_verbose_file_gets_the_lines(tmp_path, capsys):
    log_file = tmp_path / "log.txt"
    rknn = RKNN(verbose=True, verbose_file=log_file)
    rknn.config(model_pruning=True, unused_option=1)
    rknn.load_pytorch(traced_module(), [SIZE])
    rknn.build()
    written = log_file.read_text().splitlines()
    assert written == lines_of(capsys)
    assert "I Pruning: const change detail" in written and written[0].startswith("W config")


# --- config --------------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["rv1126", "RK1808", ["rk3588", "rk3566"], list(TARGETS)])
def test_config_accepts_every_known_target(target, capsys):
    assert RKNN().config(target_platform=target) == 0
    assert lines_of(capsys) == []


def test_config_names_options_the_simulator_ignores(capsys):
    assert RKNN().config(quantized_dtype="asymmetric_affine-u8", batch_size=4) == 0
    assert lines_of(capsys) == ["W config: the simulator does not use batch_size; ignored"]


def test_a_rejected_config_changes_nothing(capsys):
    rknn = RKNN(verbose=True)
    assert rknn.config(model_pruning=True, std_values=[[0, 1, 1]]) == -1
    assert rknn.load_pytorch(traced_module(), [SIZE]) == 0 and rknn.build() == 0
    assert "I Pruning: const change detail" not in lines_of(capsys)


# --- preprocessing folded into the model ---------------------------------------------------

MEAN, STD = [10.0, 20.0, 30.0], [2.0, 4.0, 8.0]


def test_mean_std_and_reorder_become_nodes_at_the_input(image, tmp_path):
    rknn = running(model_pruning=True, mean_values=[MEAN], std_values=[STD],
                   reorder_channel="2 1 0")
    mean, std = (np.array(v, np.float32)[:, None, None] for v in (MEAN, STD))
    normalised = (nchw(image)[:, [2, 1, 0]].astype(np.float32) - mean) / std
    outputs = rknn.inference([image])
    np.testing.assert_allclose(outputs[0], torch_out(normalised), rtol=1e-4, atol=1e-4)

    rknn.export_onnx(tmp_path / "m.onnx")
    graph = onnx.load(tmp_path / "m.onnx").graph
    assert [n.op_type for n in graph.node[:3]] == ["Gather", "Sub", "Div"]
    assert graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [1, *SIZE]


def test_inputs_pass_through_skips_the_preprocessing(image):
    rknn = running(model_pruning=True, mean_values=[MEAN], std_values=[STD],
                   reorder_channel="2 1 0")
    outputs = rknn.inference([image], inputs_pass_through=[1])
    np.testing.assert_allclose(outputs[0], torch_out(nchw(image)), rtol=1e-4, atol=1e-4)


def test_a_flat_mean_list_and_neutral_steps(image, tmp_path):
    rknn = running(mean_values=[0, 0, 0], std_values=[[1, 1, 1]], reorder_channel="0 1 2")
    rknn.export_onnx(tmp_path / "m.onnx")
    assert "Sub" not in [n.op_type for n in onnx.load(tmp_path / "m.onnx").graph.node]
    np.testing.assert_allclose(rknn.inference([image])[0], torch_out(nchw(image)), atol=1e-4)


# --- inference -----------------------------------------------------------------------------

def test_nhwc_nchw_and_unbatched_inputs_agree(image):
    rknn = running(model_pruning=True)
    want = torch_out(nchw(image))
    for inputs, data_format in (([image], "nhwc"), ([nchw(image)], "nchw"),
                                ([image[0]], "nhwc"), ((nchw(image),), ["nchw"])):
        outputs = rknn.inference(inputs, data_format=data_format)
        np.testing.assert_allclose(outputs[0], want, rtol=1e-4, atol=1e-4)


# --- export, load_rknn, load_onnx ----------------------------------------------------------

def test_export_rknn_writes_onnx_and_load_rknn_reads_it_back(image, tmp_path, capsys):
    first = running(model_pruning=True, mean_values=[MEAN], std_values=[STD])
    path = tmp_path / "model.rknn"
    assert first.export_rknn(path) == 0
    assert lines_of(capsys) == [f"W {path} is an ONNX model, not Rockchip's proprietary RKNN "
                                "binary; it loads in ONNX Runtime or in RKNN-Toolkit's load_onnx"]
    onnx.checker.check_model(onnx.load(path))
    second = RKNN()
    assert second.load_rknn(path) == 0 and second.init_runtime() == 0
    np.testing.assert_array_equal(second.inference([image])[0], first.inference([image])[0])


def test_load_onnx_with_input_size_list_and_pruning(onnx_file):
    rknn = RKNN()
    rknn.config(model_pruning=True)
    assert rknn.load_onnx(onnx_file, input_size_list=[[3, 8, 8]]) == 0
    assert rknn.build() == 0 and rknn.init_runtime() == 0
    assert rknn.inference([np.ones((1, 8, 8, 3), np.float32)])[0].shape == (1, 2, 8, 8)


def test_load_onnx_takes_weights_listed_as_inputs_as_the_weights_they_are(tmp_path):
    m = dead_channel_model()  # as torch.onnx.export(keep_initializers_as_inputs=True) writes
    m.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                         for t in m.graph.initializer)
    path = tmp_path / "model.onnx"
    path.write_bytes(m.SerializeToString())
    rknn = RKNN()
    rknn.config(model_pruning=True)
    assert rknn.load_onnx(str(path), input_size_list=[[3, 8, 8]]) == 0
    assert rknn.build() == 0 and rknn.init_runtime() == 0
    assert rknn._report.removed_channels == 2 and rknn._report.constant_initializers
    assert rknn.inference([np.ones((1, 8, 8, 3), np.float32)])[0].shape == (1, 2, 8, 8)


def test_load_onnx_cuts_the_graph_at_named_outputs(onnx_file):
    rknn = RKNN()
    assert rknn.load_onnx(str(onnx_file), inputs=["x"], outputs=["r"]) == 0
    assert rknn.build() == 0 and rknn.init_runtime() == 0
    assert rknn.inference([np.ones((1, 3, 8, 8), np.float32)], data_format="nchw")[0].shape == \
        (1, 4, 8, 8)


# --- runtime, perf, accuracy analysis ------------------------------------------------------

def test_init_runtime_on_an_npu_target_says_the_simulator_runs(capsys):
    rknn = built()
    assert rknn.init_runtime() == 0
    assert lines_of(capsys) == []
    assert rknn.init_runtime(target="rk1808", device_id="c3d9b8674f4b94f6") == 0
    (line,) = lines_of(capsys)
    assert line.startswith("W target rk1808 (device c3d9b8674f4b94f6): no Rockchip NPU")
    assert "simulator" in line


def test_eval_perf_times_each_op_and_the_total(image, capsys):
    rknn = running(model_pruning=True)
    perf = rknn.eval_perf(inputs=[image])
    assert perf["runs"] > 0 and perf["total_time_us"] > 0
    assert perf["total_time_us"] == pytest.approx(sum(l["time_us"] for l in perf["layers"]))
    assert any("Conv" in layer["op_type"] for layer in perf["layers"])
    lines = lines_of(capsys)
    assert lines[1].split() == ["op", "type", "node", "time", "(us)"]
    assert any(line.startswith("Total time (us): ") for line in lines)
    assert rknn.eval_perf(is_print=False)["layers"] and lines_of(capsys) == []


def test_accuracy_analysis_compares_kept_channels_of_every_tensor(image, tmp_path, capsys):
    rknn = running(model_pruning=True, mean_values=[MEAN], std_values=[STD])
    lines_of(capsys)
    out_dir = tmp_path / "snapshot" / "nested"
    assert rknn.accuracy_analysis([image], output_dir=out_dir) == 0
    table = (out_dir / "error_analysis.txt").read_text().splitlines()
    assert table[0].startswith("# simulator_error: ") and table[4].startswith("layer_name")
    rows = {line.split()[1]: line.split()[2:] for line in table[9:]}
    assert table[8].startswith("[Input] input0 ") and "output0" in rows
    # A float cut is exact: every tensor, conv1's output among them (4 of its 8 channels cut,
    # the loaded model's matched to the kept 4), is the original's, entire and single.
    assert all(values == ["1.00000", "|", "0.00000"] * 2 for values in rows.values())
    assert any(line.startswith("[Conv] ") for line in table)
    (summary,) = lines_of(capsys)
    assert summary.startswith("output0: cos sim 1.0000000, euclidean 0, max abs error 0")


# --- bad input: -1 (None for inference and eval_perf) and one E line ----------------------

def fresh() -> RKNN:
    return RKNN()


def loaded() -> RKNN:
    rknn = RKNN()
    rknn.load_pytorch(traced_module(), [SIZE])
    return rknn


BAD_CALLS: list[tuple[str, Callable[[], RKNN], Callable[[RKNN, Any], Any], Any, str]] = [
    ("unknown target", fresh, lambda r, p: r.config(target_platform="rk9999"), -1,
     "rk1806, rk1808, rk3399pro, rv1109, rv1126, rk3562"),
    ("unknown runtime target", built, lambda r, p: r.init_runtime(target="npu9"), -1,
     "not a known platform"),
    ("bad mean", fresh, lambda r, p: r.config(mean_values="128"), -1, "mean_values"),
    ("zero std", fresh, lambda r, p: r.config(std_values=[[1, 0, 1]]), -1, "must not contain 0"),
    ("bad reorder", fresh, lambda r, p: r.config(reorder_channel="b g r"), -1, "'2 1 0'"),
    ("bad pruning mode", fresh, lambda r, p: r.config(model_pruning="yes"), -1,
     "model_pruning 'yes' is not a pruning mode"),
    ("pruning mode 1", fresh, lambda r, p: r.config(model_pruning=1), -1,
     "model_pruning 1 is not a pruning mode"),
    ("bad pruning objective", fresh,
     lambda r, p: r.config(model_pruning="full", pruning_objective="speed"), -1,
     "pruning_objective 'speed' is not known; use one of flops, params, latency"),
    ("missing TorchScript", fresh, lambda r, p: r.load_pytorch(str(p / "none.pt"), [SIZE]), -1,
     "no such file"),
    ("not TorchScript", fresh, lambda r, p: r.load_pytorch(str(p / "model.onnx"), [SIZE]), -1,
     "not a TorchScript file"),
    ("size does not fit", fresh, lambda r, p: r.load_pytorch(pruned_module(), [[4, 16, 16]]), -1,
     "do not fit the model"),
    ("size with batch", fresh, lambda r, p: r.load_pytorch(pruned_module(), [1, 3, 16, 16]), -1,
     "input_size_list must be a list of sizes"),
    ("ONNX sizes count", fresh,
     lambda r, p: r.load_onnx(p / "model.onnx", input_size_list=[[3, 8, 8], [3, 8, 8]]), -1,
     "input_size_list has 2 sizes, the model has 1 inputs"),
    ("ONNX size mismatch", fresh,
     lambda r, p: r.load_onnx(p / "model.onnx", input_size_list=[[3, 9, 8]]), -1,
     "does not fit input 'x'"),
    ("unknown ONNX output", fresh, lambda r, p: r.load_onnx(p / "model.onnx", outputs=["zz"]),
     -1, "'zz' is not a tensor of the model"),
    ("missing ONNX", fresh, lambda r, p: r.load_onnx(p / "none.onnx"), -1, "no such file"),
    ("garbage rknn", fresh, lambda r, p: r.load_rknn(p / "garbage.rknn"), -1,
     "not Rockchip's RKNN binaries"),
    ("build before load", fresh, lambda r, p: r.build(), -1,
     "call load_pytorch or load_onnx before build"),
    ("quantization without dataset", loaded, lambda r, p: r.build(do_quantization=True), -1,
     "build(do_quantization=True) needs dataset="),
    ("hybrid quantization", loaded, lambda r, p: r.hybrid_quantization_step1("dataset.txt"), -1,
     "hybrid quantization (hybrid_quantization_step1/2) is not available"),
    ("mean per channel", fresh, lambda r, p: (r.config(mean_values=[[1, 2]]),
                                              r.load_pytorch(traced_module(), [SIZE]),
                                              r.build())[-1], -1, "has 3 channels"),
    ("reorder not an order", fresh, lambda r, p: (r.config(reorder_channel="0 0 1"),
                                                  r.load_pytorch(traced_module(), [SIZE]),
                                                  r.build())[-1], -1, "is not an order"),
    ("export before build", loaded, lambda r, p: r.export_rknn(p / "x.rknn"), -1,
     "call build (or load_rknn) before export_rknn"),
    ("export to missing dir", built, lambda r, p: r.export_onnx(p / "no" / "x.onnx"), -1,
     "does not exist"),
    ("runtime before build", loaded, lambda r, p: r.init_runtime(), -1,
     "before init_runtime"),
    ("inference before runtime", built, lambda r, p: r.inference([np.zeros((1, 16, 16, 3))]),
     None, "call init_runtime before inference"),
    ("eval_perf before runtime", built, lambda r, p: r.eval_perf(), None,
     "call init_runtime before eval_perf"),
    ("analysis before build", loaded, lambda r, p: r.accuracy_analysis([], p), -1,
     "then build, first"),
    ("too many inputs", running,
     lambda r, p: r.inference([np.zeros((1, 16, 16, 3))] * 2), None,
     "got 2 inputs, the model has 1"),
    ("wrong shape", running, lambda r, p: r.inference([np.zeros((1, 3, 16, 16))]), None,
     "input 0 has shape [1, 3, 16, 16]; the model expects [1, 16, 16, 3] in NHWC"),
    ("not a list", running, lambda r, p: r.inference(np.zeros((1, 16, 16, 3))), None,
     "inputs must be a list"),
    ("bad data_format", running,
     lambda r, p: r.inference([np.zeros((1, 16, 16, 3))], data_format="hwc"), None,
     "data_format must be 'nhwc' or 'nchw'"),
    ("bad pass-through", running,
     lambda r, p: r.inference([np.zeros((1, 16, 16, 3))], inputs_pass_through=[2]), None,
     "inputs_pass_through"),
    ("strings", running, lambda r, p: r.inference([np.array(["a"])]), None, "give numbers"),
    ("after release", running,
     lambda r, p: (r.release(), r.inference([np.zeros((1, 16, 16, 3))]))[-1], None,
     "call init_runtime before inference"),
    ("inference after a new build", running,
     lambda r, p: (r.build(), r.inference([np.zeros((1, 16, 16, 3))]))[-1], None,
     "call init_runtime before inference"),
]


@pytest.mark.parametrize("setup, call, result, words", [c[1:] for c in BAD_CALLS],
                         ids=[c[0] for c in BAD_CALLS])
def test_bad_input_gives_a_code_and_one_error_line(setup, call, result, words, onnx_file,
                                                   tmp_path, capsys):
    (tmp_path / "garbage.rknn").write_bytes(b"RKNN\x00\x01 not onnx")
    rknn = setup()
    lines_of(capsys)
    assert call(rknn, tmp_path) == result
    errors = [line for line in lines_of(capsys) if not line.startswith(("I ", "W "))]
    assert len(errors) == 1 and errors[0].startswith("E "), errors
    assert words in errors[0]


def test_pass_through_of_a_preprocessed_rknn_file_is_refused(image, tmp_path, capsys):
    path = tmp_path / "model.rknn"
    running(mean_values=[MEAN]).export_rknn(path)
    rknn = RKNN()
    assert rknn.load_rknn(path) == 0 and rknn.init_runtime() == 0
    lines_of(capsys)
    assert rknn.inference([image], data_format="nhwc", inputs_pass_through=[1]) is None
    (line,) = lines_of(capsys)
    assert line.startswith("E inputs_pass_through needs a model built in this session")
    assert rknn.inference([image], inputs_pass_through=[0]) is not None


@pytest.mark.parametrize("failed_load", [
    lambda r, p: r.load_onnx(p / "none.onnx"),
    lambda r, p: r.load_onnx(p / "model.onnx", outputs=["zz"]),
    lambda r, p: r.load_pytorch(str(p / "none.pt"), [SIZE]),
    lambda r, p: r.load_pytorch(pruned_module(), [[4, 16, 16]]),
    lambda r, p: r.load_rknn(p / "garbage.rknn"),
], ids=["missing onnx", "bad onnx output", "missing torchscript", "bad torch size", "garbage rknn"])
def test_a_failed_load_clears_the_loaded_model(failed_load, onnx_file, tmp_path, capsys):
    (tmp_path / "garbage.rknn").write_bytes(b"RKNN\x00\x01 not onnx")
    rknn = built()
    assert failed_load(rknn, tmp_path) == -1
    lines_of(capsys)
    # neither the model loaded before nor the one built from it is still there
    assert rknn.build() == -1
    assert rknn.init_runtime() == -1
    errors = lines_of(capsys)
    assert len(errors) == 2 and "before build" in errors[0] and "before init_runtime" in errors[1]


def test_inference_without_data_format_warns_and_takes_nhwc(image, capsys):
    """RKNN-Toolkit2's default data_format is None: a `W` line, then NHWC."""
    rknn = running()
    lines_of(capsys)
    np.testing.assert_allclose(rknn.inference([image])[0], torch_out(nchw(image)), atol=1e-4)
    assert lines_of(capsys) == ["W inference: data_format is not set; using 'nhwc'"]
    rknn.inference([image], data_format="nhwc")
    assert lines_of(capsys) == []


# --- the pruning's HTML report and its dataset (issue 15) ----------------------------------

def test_verbose_export_writes_the_html_report_next_to_the_model(tmp_path, capsys):
    rknn = built(model_pruning=True, verbose=True)
    assert rknn.export_rknn(str(tmp_path / "model_pruned.rknn")) == 0
    page = (tmp_path / "model_pruned.report.html").read_text()
    assert "<svg" in page and "http" not in page and "model_pruned.rknn" in page
    assert any("report written to" in line for line in lines_of(capsys))
    quiet = built(model_pruning=True)
    assert quiet.export_onnx(str(tmp_path / "quiet.onnx")) == 0
    assert not (tmp_path / "quiet.report.html").exists()  # only when verbose
    unpruned = built(verbose=True)
    assert unpruned.export_rknn(str(tmp_path / "plain.rknn")) == 0
    assert not (tmp_path / "plain.report.html").exists()  # nothing was pruned


def test_build_verifies_the_pruning_on_its_dataset(tmp_path, capsys, monkeypatch):
    from channelcut import verify

    images = np.random.default_rng(3).integers(0, 256, (2, 1, 16, 16, 3)).astype(np.float32)
    for k, sample in enumerate(images):
        np.save(tmp_path / f"img{k}.npy", sample)
    (tmp_path / "dataset.txt").write_text("img0.npy\nimg1.npy\n")
    seen = []
    run = verify._run
    monkeypatch.setattr(verify, "_run", lambda session, feeds: seen.append(feeds) or
                        run(session, feeds))
    rknn = RKNN(verbose=True)
    assert rknn.config(mean_values=[[10, 20, 30]], std_values=[[2, 4, 8]],
                       model_pruning=True) == 0
    assert rknn.load_pytorch(traced_module(), [SIZE]) == 0
    assert rknn.build(do_quantization=False, dataset=str(tmp_path / "dataset.txt")) == 0
    lines = lines_of(capsys)
    assert not any("dataset" in line and line.startswith("W ") for line in lines)
    assert any("verifying on the 2 samples" in line for line in lines)
    # the model's own inputs: each raw NHWC image, NCHW, minus the mean, over std
    mean = np.array([10, 20, 30], np.float32).reshape(1, 3, 1, 1)
    std = np.array([2, 4, 8], np.float32).reshape(1, 3, 1, 1)
    assert len(seen) == 4  # the original on each sample, then the cut model
    for k in range(2):
        [fed] = seen[k].values()
        np.testing.assert_allclose(fed, (nchw(images[k]) - mean) / std, rtol=1e-6)
