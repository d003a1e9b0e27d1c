"""The RKNN facade's quantized build on the simulator: dataset.txt, options, accuracy_analysis."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

from channelcut.rknn import RKNN, demo  # noqa: E402 - after the torch skip
from channelcut.rknn import quantize, simulator, toolkit  # noqa: E402
from channelcut.rknn.accuracy import HEADER  # noqa: E402
from builders import model, node  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.* is deprecated:DeprecationWarning")


@pytest.fixture(autouse=True)
def simulator_backend(monkeypatch):
    """These tests are the ONNX Runtime simulator's, even where RKNN-Toolkit2 is installed."""
    monkeypatch.setattr(toolkit, "available", lambda: False)

MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
MIN_COS = 0.999
NUMBER = r"(-?\d+\.\d{5}|nan)"
ROW = re.compile(rf"^(\[\w+\] \S+) +(?:{NUMBER} \| {NUMBER}   {NUMBER} \| {NUMBER} {{7}})?$")


def write_images(folder: Path, count: int, height: int, width: int,
                 suffix: str = ".png") -> Path:
    """`count` random RGB images and the dataset.txt that names them (relative paths)."""
    rng = np.random.default_rng(7)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    names = []
    for index in range(count):
        name = f"images/{index}{suffix}"
        cv2.imwrite(str(folder / name), rng.integers(0, 256, (height, width, 3), np.uint8))
        names.append(name)
    dataset = folder / "dataset.txt"
    dataset.write_text("\n".join(names) + "\n")
    return dataset


def rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)[np.newaxis]


def built(load, dataset: Path | None, **config) -> RKNN:
    rknn = RKNN()
    assert rknn.config(**config) == 0
    assert load(rknn) == 0
    assert rknn.build(do_quantization=dataset is not None, dataset=dataset) == 0
    assert rknn.init_runtime() == 0
    return rknn


def seed_loader(tmp_path: Path):
    path = tmp_path / "seed.pt"
    torch.jit.save(torch.jit.trace(demo.pruned_net(), torch.zeros(1, *demo.INPUT_SIZE)),
                   str(path))
    return lambda rknn: rknn.load_pytorch(str(path), [demo.INPUT_SIZE])


def error_rows(path: Path) -> dict[str, tuple[float, ...] | None]:
    """error_analysis.txt, checked against RKNN-Toolkit2's layout: label -> 4 numbers."""
    lines = path.read_text().splitlines()
    assert lines[:4] == HEADER
    width = len(lines[7]) - 40  # the dashes: longest layer name + 5, + 40
    assert lines[4] == "layer_name".ljust(width + 9) + "simulator_error" + " " * 20
    assert lines[5].strip() == "entire              single"
    assert lines[6].split() == ["cos", "euc", "cos", "euc"] and set(lines[7]) == {"-"}
    rows = {}
    for line in lines[8:]:
        match = ROW.match(line)
        assert match, line
        assert len(match.group(1)) <= width - 5 and line[:width].rstrip() == match.group(1)
        rows[match.group(1)] = (tuple(float(g) for g in match.groups()[1:])
                                if match.group(2) else None)
    return rows


# --- quantized builds ----------------------------------------------------------------------

def test_seed_network_quantized_from_images_matches_float(tmp_path, capsys):
    load = seed_loader(tmp_path)
    dataset = write_images(tmp_path, 6, 200, 250)  # not the input size: resized
    config = {"mean_values": [MEAN], "std_values": [STD], "model_pruning": True}
    floats, quantized = built(load, None, **config), built(load, dataset, **config)
    image = rgb(tmp_path / "images/0.png")
    image = cv2.resize(image[0], (224, 224))[np.newaxis]
    want = floats.inference([image], data_format="nhwc")[0]
    got = quantized.inference([image], data_format="nhwc")[0]
    assert demo.cos_sim(want, got) >= MIN_COS and not np.array_equal(want, got)

    # Pruning first: the quantized model is the cut one (the seed's table: 48, 47 and 64 of
    # the 64 filters stay), its weights those of the float cut.
    shapes = {}
    for name, rknn in (("float", floats), ("quantized", quantized)):
        assert rknn.export_onnx(tmp_path / f"{name}.onnx") == 0
        exported = onnx.load(str(tmp_path / f"{name}.onnx"))
        shapes[name] = sorted(numpy_helper.to_array(t).shape for t in exported.graph.initializer
                              if len(t.dims) == 4)
    assert {n.op_type for n in exported.graph.node} >= {"QuantizeLinear", "DequantizeLinear"}
    assert shapes["quantized"] == shapes["float"]
    assert sorted(shape[0] for shape in shapes["float"]) == [47, 48, 64]
    # eval_perf times the quantized model
    perf = quantized.eval_perf(inputs=[image], is_print=False)
    assert any("Q" in (layer["op_type"] or "") for layer in perf["layers"])
    capsys.readouterr()

    snapshot = tmp_path / "snapshot"
    assert quantized.accuracy_analysis([str(tmp_path / "images/1.png")], snapshot) == 0
    rows = error_rows(snapshot / "error_analysis.txt")
    assert rows["[Input] input0"] == (1.0, 0.0, 1.0, 0.0)
    relus = [values for label, values in rows.items() if label.startswith("[Relu] ")]
    assert len(relus) == 3 and all(v is not None and v[0] >= MIN_COS and v[2] >= MIN_COS
                                   for v in relus)
    # "entire" accumulates the errors through the network, "single" is the last layer's own
    last = relus[-1]
    assert last[1] > 0 and last[3] > 0 and last[3] < last[1]
    (summary,) = [line for line in capsys.readouterr().out.splitlines()
                  if line.startswith("output0: ")]
    assert float(summary.split()[3].rstrip(",")) == pytest.approx(last[0], abs=1e-5)


@pytest.mark.slow
def test_mobilenet_v2_quantized_from_jpegs_matches_float(tmp_path):
    import zoo  # noqa: PLC0415 - torchvision, the test extra

    net = zoo.build("mobilenet_v2", seed=0)
    zoo.prune_ln_structured(net, amount=0.5)
    proto = zoo.export_onnx(net, zoo.SMALL_INPUTS["mobilenet_v2"])
    dataset = write_images(tmp_path, 8, 48, 64, ".jpg")
    config = {"mean_values": [MEAN], "std_values": [STD], "model_pruning": True}
    floats = built(lambda r: r.load_onnx(proto), None, **config)
    quantized = built(lambda r: r.load_onnx(proto), dataset, **config)
    image = np.random.default_rng(3).integers(0, 256, (1, 32, 32, 3), np.uint8)
    want = floats.inference([image], data_format="nhwc")[0]
    got = quantized.inference([image], data_format="nhwc")[0]
    assert demo.cos_sim(want, got) >= MIN_COS
    assert quantized.accuracy_analysis([image], tmp_path / "snapshot") == 0
    rows = error_rows(tmp_path / "snapshot" / "error_analysis.txt")
    assert sum(label.startswith("[Conv] ") for label in rows) == 52


def test_calibration_sees_the_preprocessed_input(tmp_path):
    """Calibration applies mean/std/reorder as inference does: with a mean far from 0 the
    input range would be wrong otherwise and the first conv's output far off."""
    weight = np.random.default_rng(0).standard_normal((4, 3, 1, 1)).astype(np.float32)
    m = model([node("Conv", ["x", "w"], ["y"])], {"x": [1, 3, 8, 8]}, ["y"], {"w": weight})
    rng = np.random.default_rng(1)
    samples = []
    for index in range(4):
        np.save(tmp_path / f"{index}.npy", rng.uniform(1000, 1010, (8, 8, 3)).astype(np.float32))
        samples.append(f"{index}.npy")
    (tmp_path / "dataset.txt").write_text("\n".join(samples))
    config = {"mean_values": [[1005, 1004, 1006]], "std_values": [[2, 3, 4]],
              "reorder_channel": "2 1 0"}
    floats = built(lambda r: r.load_onnx(m), None, **config)
    quantized = built(lambda r: r.load_onnx(m), tmp_path / "dataset.txt", **config)
    image = np.load(tmp_path / "0.npy")
    want = floats.inference([image], data_format="nhwc")[0]
    assert demo.cos_sim(want, quantized.inference([image], data_format="nhwc")[0]) >= MIN_COS


def test_the_simulator_accumulates_int8_products_without_saturating():
    """A quantized conv whose int8 inputs and weights are at the top of their range: each
    product is 127 * 127, and ORT's fused kernel on a CPU without VNNI (AVX2) sums pairs of
    such products (after moving the activations to uint8: 255 * 127) in a saturating int16.
    The NPU accumulates in int32, and so must the simulator: 16 ones times 16 ones is 16."""
    channels = 16
    scale = np.float32(1 / 127)
    nodes = [node("QuantizeLinear", ["x", "x_scale", "zero"], ["xq"]),
             node("DequantizeLinear", ["xq", "x_scale", "zero"], ["xf"]),
             node("DequantizeLinear", ["wq", "w_scale", "zero"], ["wf"]),
             node("Conv", ["xf", "wf"], ["c"]),
             node("QuantizeLinear", ["c", "y_scale", "zero"], ["yq"]),
             node("DequantizeLinear", ["yq", "y_scale", "zero"], ["y"])]
    inits = {"x_scale": scale, "w_scale": scale, "y_scale": np.float32(channels / 127),
             "zero": np.int8(0), "wq": np.full((4, channels, 1, 1), 127, np.int8)}
    m = model(nodes, {"x": [1, channels, 4, 4]}, ["y"], inits)
    session = simulator.session(m)
    (y,) = session.run(None, {"x": np.ones((1, channels, 4, 4), np.float32)})
    np.testing.assert_allclose(y, channels, rtol=1e-6)


def test_several_inputs_per_line_from_npy_files(tmp_path):
    m = model([node("Add", ["a", "b"], ["s"]), node("Conv", ["s", "w"], ["y"])],
              {"a": [1, 2, 4, 4], "b": [1, 2, 4, 4]}, ["y"],
              {"w": np.random.default_rng(0).standard_normal((3, 2, 1, 1)).astype(np.float32)})
    rng = np.random.default_rng(2)
    lines = []
    for index in range(3):
        for name in "ab":
            sample = rng.standard_normal((1, 4, 4, 2)).astype(np.float32)
            np.save(tmp_path / f"{name}{index}.npy", sample)
        lines.append(f"a{index}.npy   b{index}.npy")
    (tmp_path / "dataset.txt").write_text("\n\n".join(lines) + "\n")  # blank lines are skipped
    rknn = built(lambda r: r.load_onnx(m), tmp_path / "dataset.txt")
    a, b = np.load(tmp_path / "a0.npy"), np.load(tmp_path / "b0.npy")
    weight = numpy_helper.to_array(m.graph.initializer[0])[:, :, 0, 0]
    want = np.einsum("oc,nhwc->nohw", weight, a + b)
    assert demo.cos_sim(want, rknn.inference([a, b], data_format="nhwc")[0]) >= MIN_COS


def test_readme_toolkit2_script_runs_unchanged(tmp_path, monkeypatch, capsys):
    run_readme_script(tmp_path, monkeypatch, capsys)


def run_readme_script(tmp_path: Path, monkeypatch, capsys) -> None:
    """The README's Toolkit2 script, as it stands there, on a seed model and written images."""
    from channelcut.pytorch import to_onnx  # noqa: PLC0415

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    script = readme.split("<!-- toolkit2-script -->\n```python\n", 1)[1].split("```", 1)[0]
    onnx.save(to_onnx(demo.pruned_net(), [(1, *demo.INPUT_SIZE)]), str(tmp_path / "model.onnx"))
    write_images(tmp_path, 3, 224, 224, ".jpg")
    (tmp_path / "images/0.jpg").rename(tmp_path / "image.jpg")
    (tmp_path / "dataset.txt").write_text("image.jpg\nimages/1.jpg\nimages/2.jpg\n")
    monkeypatch.chdir(tmp_path)
    exec(compile(script, "README.md", "exec"), {"__name__": "__main__"})  # noqa: S102
    out = capsys.readouterr().out
    assert "output shape: (1, 64, " in out and (tmp_path / "model.rknn").stat().st_size > 0
    assert error_rows(tmp_path / "snapshot" / "error_analysis.txt")


# --- dataset errors: -1 and one E line naming the dataset line ----------------------------

def one_error(capsys) -> str:
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("W ")]
    assert len(lines) == 1 and lines[0].startswith("E "), lines
    return lines[0]


@pytest.mark.parametrize("content, words", [
    ("images/0.png\nimages/missing.png\n",
     r"dataset .*dataset.txt line 2: .*images/missing.png does not exist \(paths are relative"),
    ("\n  \n", r"dataset .*dataset.txt: no samples; write one line per sample"),
    ("images/0.png\nsmall.npy\n",
     r"dataset .*dataset.txt line 2: .*small.npy has shape \[8, 8, 3\]; input 'x' takes "
     r"\[1, 16, 16, 3\] \(NHWC\)"),
    ("images/0.png images/1.png\n",
     r"line 1: 2 file\(s\) for a model with 1 input\(s\); give one file per input"),
    ("notes.txt\n", r"line 1: .*notes.txt is neither an image"),
])
def test_dataset_errors_name_the_line(tmp_path, capsys, content, words):
    write_images(tmp_path, 2, 16, 16)
    np.save(tmp_path / "small.npy", np.zeros((8, 8, 3), np.float32))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "dataset.txt").write_text(content)
    weight = np.ones((2, 3, 1, 1), np.float32)
    rknn = RKNN()
    assert rknn.load_onnx(model([node("Conv", ["x", "w"], ["y"])], {"x": [1, 3, 16, 16]},
                                ["y"], {"w": weight})) == 0
    capsys.readouterr()
    assert rknn.build(do_quantization=True, dataset=tmp_path / "dataset.txt") == -1
    assert re.search(words, one_error(capsys))


def test_missing_dataset_file_is_one_error(tmp_path, capsys):
    rknn = RKNN()
    rknn.load_pytorch(demo.pruned_net(), [demo.INPUT_SIZE])
    capsys.readouterr()
    assert rknn.build(do_quantization=True, dataset=str(tmp_path / "none.txt")) == -1
    assert "none.txt: cannot read it" in one_error(capsys)


# --- options -------------------------------------------------------------------------------

@pytest.mark.parametrize("options, expected", [
    ({}, {"per_channel": True, "activation_type": "QInt8", "weight_type": "QInt8",
          "calibrate_method": "MinMax"}),
    ({"quantized_dtype": "asymmetric_quantized-8", "quantized_method": "layer"},
     {"per_channel": False, "activation_type": "QInt8"}),
    ({"quantized_dtype": "asymmetric_affine-u8"},  # Toolkit1
     {"activation_type": "QUInt8", "weight_type": "QUInt8"}),
    ({"quantized_dtype": "dynamic_fixed_point-i8"},
     {"extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True}}),
    ({"quantized_algorithm": "kl_divergence"}, {"calibrate_method": "Entropy"}),
    ({"quantized_algorithm": "mmse"},
     {"calibrate_method": "Percentile",
      "extra_options": {"ActivationSymmetric": False, "WeightSymmetric": True,
                        "CalibPercentile": quantize.MMSE_PERCENTILE}}),
])
def test_options_map_onto_ort_static_quantization(options, expected):
    mapped = quantize.ort_options(quantize.quantization_config(**options))
    assert mapped["quant_format"] == "QDQ"
    assert {key: mapped[key] for key in expected} == expected


def weight_scales(rknn: RKNN, tmp_path: Path) -> list[int]:
    path = tmp_path / "q.onnx"
    rknn.export_onnx(path)
    exported = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in exported.graph.initializer}
    return [inits[n.input[1]].size for n in exported.graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] in inits and
            inits[n.input[0]].ndim == 4]


def test_quantized_method_layer_gives_one_scale_per_weight(tmp_path):
    load = seed_loader(tmp_path)
    dataset = write_images(tmp_path, 2, 224, 224)
    per_channel = built(load, dataset, model_pruning=True)
    per_layer = built(load, dataset, model_pruning=True, quantized_method="layer")
    assert weight_scales(per_channel, tmp_path) == [48, 47, 64]  # one per kept filter
    assert weight_scales(per_layer, tmp_path) == [1, 1, 1]


@pytest.mark.parametrize("options, words", [
    ({"quantized_dtype": "int4"}, "quantized_dtype 'int4' is not supported by the simulator"),
    ({"quantized_algorithm": "best"}, "use one of normal, kl_divergence, mmse"),
    ({"quantized_method": "tensor"}, "use one of channel, layer"),
    ({"optimization_level": 5}, "optimization_level 5 is not known"),
])
def test_bad_options_are_one_error(capsys, options, words):
    assert RKNN().config(**options) == -1
    assert words in one_error(capsys)


# --- backends ------------------------------------------------------------------------------

def test_toolkit_backend_without_the_toolkit_says_how_to_install(capsys, monkeypatch):
    monkeypatch.setattr(toolkit, "available", lambda: False)
    rknn = RKNN(backend="rknn-toolkit2")
    assert "pip install rknn-toolkit2" in one_error(capsys)
    assert rknn.config() == -1 and "pip install rknn-toolkit2" in one_error(capsys)
    assert RKNN().backend == "onnxruntime" == RKNN(backend="onnxruntime").backend


def test_unknown_backend_is_one_error(capsys):
    RKNN(backend="tensorrt")
    assert "backend 'tensorrt' is not known; use one of onnxruntime, rknn-toolkit2" in \
        one_error(capsys)


def test_build_quantizes_when_a_dataset_is_given(tmp_path):
    """do_quantization's default: quantize with a dataset (RKNN's True), float without one."""
    weight = np.random.default_rng(0).standard_normal((2, 3, 1, 1)).astype(np.float32)
    m = model([node("Conv", ["x", "w"], ["y"])], {"x": [1, 3, 4, 4]}, ["y"], {"w": weight})
    np.save(tmp_path / "0.npy", np.ones((4, 4, 3), np.float32))
    (tmp_path / "dataset.txt").write_text("0.npy\n")
    op_types = []
    for arguments in ({}, {"dataset": tmp_path / "dataset.txt"}):
        rknn = RKNN()
        assert rknn.load_onnx(m) == 0 and rknn.build(**arguments) == 0
        assert rknn.export_onnx(tmp_path / "out.onnx") == 0
        op_types.append({n.op_type for n in onnx.load(str(tmp_path / "out.onnx")).graph.node})
    assert op_types[0] == {"Conv"} and "QuantizeLinear" in op_types[1]


def test_accuracy_analysis_of_a_missing_file_is_one_error(tmp_path, capsys):
    rknn = RKNN()
    rknn.load_pytorch(demo.pruned_net(), [demo.INPUT_SIZE])
    rknn.build(do_quantization=False)
    capsys.readouterr()
    assert rknn.accuracy_analysis([str(tmp_path / "dog.jpg")], tmp_path / "snapshot") == -1
    assert re.search(r"^E accuracy_analysis input 0: .*dog.jpg does not exist$", one_error(capsys))


@pytest.mark.parametrize("options", [
    {"quantized_dtype": "asymmetric_affine-u8"}, {"quantized_dtype": "dynamic_fixed_point-i8"},
    {"quantized_algorithm": "kl_divergence"}, {"quantized_algorithm": "mmse"},
    {"quantized_method": "layer", "optimization_level": 0},
], ids=lambda options: "-".join(map(str, options.values())))
def test_every_option_builds_a_close_model(tmp_path, options):
    rng = np.random.default_rng(4)
    m = model([node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), node("Relu", ["c"], ["r"]),
               node("Conv", ["r", "w2"], ["y"])], {"x": [1, 3, 8, 8]}, ["y"],
              {"w": rng.standard_normal((6, 3, 3, 3)).astype(np.float32),
               "w2": rng.standard_normal((4, 6, 1, 1)).astype(np.float32)})
    for index in range(8):
        np.save(tmp_path / f"{index}.npy", rng.uniform(0, 255, (8, 8, 3)).astype(np.float32))
    (tmp_path / "dataset.txt").write_text("".join(f"{i}.npy\n" for i in range(8)))
    config = {"mean_values": [[128, 128, 128]], "std_values": [[64, 64, 64]], **options}
    floats = built(lambda r: r.load_onnx(m), None, **config)
    quantized = built(lambda r: r.load_onnx(m), tmp_path / "dataset.txt", **config)
    image = np.load(tmp_path / "0.npy")
    want = floats.inference([image], data_format="nhwc")[0]
    got = quantized.inference([image], data_format="nhwc")[0]
    assert 0.99 <= demo.cos_sim(want, got) and not np.array_equal(want, got)


def test_images_decode_with_pillow_without_opencv(tmp_path, monkeypatch):
    dataset = write_images(tmp_path, 2, 20, 24)
    monkeypatch.setitem(sys.modules, "cv2", None)  # makes `import cv2` fail
    rknn = RKNN()
    assert rknn.load_onnx(model([node("Conv", ["x", "w"], ["y"])], {"x": [1, 3, 16, 16]}, ["y"],
                                {"w": np.ones((2, 3, 1, 1), np.float32)})) == 0
    assert rknn.build(do_quantization=True, dataset=dataset) == 0


def test_without_any_image_decoder_only_pruning_falls_back(tmp_path, monkeypatch, capsys):
    dataset = write_images(tmp_path, 2, 224, 224)
    monkeypatch.setitem(sys.modules, "cv2", None)
    monkeypatch.setitem(sys.modules, "PIL", None)
    rknn = RKNN()
    assert rknn.config(model_pruning=True) == 0
    assert rknn.load_pytorch(demo.pruned_net(), [demo.INPUT_SIZE]) == 0
    capsys.readouterr()
    assert rknn.build(do_quantization=False, dataset=dataset) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("W dataset") and "needs OpenCV" in line and "random inputs" in line
    assert rknn.build(do_quantization=True, dataset=dataset) == -1
    assert "needs OpenCV: pip install 'channelcut[rknn]'" in one_error(capsys)
