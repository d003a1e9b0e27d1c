"""PyTorch to ONNX: TorchScript files and nn.Modules, BatchNorm folded, clear errors."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from channelcut.errors import ChannelcutError  # noqa: E402 - after the torch skip
from channelcut.pytorch import to_onnx  # noqa: E402

SHAPE = [1, 3, 16, 16]
# The tests save TorchScript files as users do; torch 2.13 calls that API deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.* is deprecated:DeprecationWarning")


def conv_bn_relu() -> nn.Module:
    """Conv -> BatchNorm (non-trivial statistics, so folding changes the weights) -> ReLU."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 4, 1))
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-1, 1)
    return model


def run_onnx(model: onnx.ModelProto, *inputs: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {f"input{i}": x for i, x in enumerate(inputs)})


def torch_out(model: nn.Module, *inputs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(*(torch.from_numpy(x) for x in inputs)).numpy()


def op_types(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)


@pytest.fixture
def torchscript_file(tmp_path):
    model = conv_bn_relu().eval()
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.trace(model, torch.zeros(SHAPE)), str(path))
    return path


def test_torchscript_file_exports_with_batchnorm_folded(torchscript_file, x):
    model = to_onnx(torchscript_file, [SHAPE])
    assert op_types(model) == ["Conv", "Relu", "Conv"]
    assert [i.name for i in model.graph.input] == ["input0"]
    assert [o.name for o in model.graph.output] == ["output0"]
    assert len(model.graph.initializer) == 4  # two weights, two biases: real initializers
    assert all(t.HasField("raw_data") for t in model.graph.initializer)
    assert model.opset_import[0].version >= 17
    np.testing.assert_allclose(run_onnx(model, x)[0], torch_out(conv_bn_relu(), x), atol=1e-5)


def test_nn_module_keeps_parameter_names_and_training_mode(x):
    module = conv_bn_relu().train()
    model = to_onnx(module, [SHAPE])
    assert op_types(model) == ["Conv", "Relu", "Conv"]
    assert {t.name for t in model.graph.initializer} == {"0.weight", "0.bias", "3.weight",
                                                         "3.bias"}
    assert module.training and module[1].training  # exported in eval mode, then restored
    np.testing.assert_allclose(run_onnx(model, x)[0], torch_out(module, x), atol=1e-5)



class CachingHead(nn.Module):
    """Caches what its forward computes on the module, as ultralytics' Detect keeps its anchors:
    under the torch.export exporter the cache would be a fake tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.anchors = torch.zeros(0)

    def forward(self, x):
        if self.anchors.shape != x.shape[2:]:
            self.anchors = torch.ones(x.shape[2:])
            self.shape = x.shape
        return self.conv(x) * self.anchors


def test_nn_module_attributes_its_forward_caches_are_restored(x):
    module = CachingHead()
    anchors = module.anchors
    model = to_onnx(module, [SHAPE])
    assert module.anchors is anchors and not hasattr(module, "shape")
    copy.deepcopy(module)  # failed on a fake tensor
    np.testing.assert_allclose(run_onnx(model, x)[0], torch_out(module, x), atol=1e-5)

def test_several_inputs_and_outputs():
    class TwoInTwoOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, a, b):
            y = self.conv(a) + self.conv(b)
            return y, y.mean((2, 3))

    module = TwoInTwoOut()
    a, b = (np.full(SHAPE, v, np.float32) for v in (1.0, 2.0))
    model = to_onnx(module, [SHAPE, SHAPE])
    assert [o.name for o in model.graph.output] == ["output0", "output1"]
    got = run_onnx(model, a, b)
    with torch.no_grad():
        want = module(torch.from_numpy(a), torch.from_numpy(b))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.numpy(), atol=1e-5)


def test_module_the_graph_exporter_refuses_is_traced_instead(x, caplog):
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, inp):
            y = self.conv(inp)
            if y.sum() > 0:  # data-dependent control flow: torch.export cannot export it
                return y * 2
            return y

    module = DataDependent()
    with caplog.at_level("INFO", logger="channelcut.pytorch"):
        model = to_onnx(module, [SHAPE])
    assert "tracing instead" in caplog.text
    assert "Conv" in op_types(model)


def test_export_writes_nothing_beside_the_file_or_in_the_cwd(torchscript_file, tmp_path,
                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    to_onnx(torchscript_file, [SHAPE])
    to_onnx(conv_bn_relu(), [SHAPE])
    assert os.listdir(tmp_path) == ["model.pt"]


@pytest.mark.parametrize("kind", ["missing", "directory", "text", "state_dict", "pickled"])
def test_a_file_that_is_not_torchscript_is_a_clear_error(tmp_path, kind):
    path = tmp_path / "model.pt"
    if kind == "directory":
        path.mkdir()
    elif kind == "text":
        path.write_text("not a model")
    elif kind == "state_dict":
        torch.save(conv_bn_relu().state_dict(), path)
    elif kind == "pickled":
        torch.save(conv_bn_relu(), path)
    with pytest.raises(ChannelcutError) as error:
        to_onnx(path, [SHAPE])
    message = str(error.value)
    assert str(path) in message and "\n" not in message
    assert "no such file" in message or "directory" in message or "torch.jit.save" in message


@pytest.mark.parametrize("shapes, words", [
    ([[1, 4, 16, 16]], "do not fit the model"),
    ([[1, 3, 16, 16], [1, 3, 16, 16]], "do not fit the model"),
    ([[3, 16, 16]], "do not fit the model"),
    ([], "non-empty list"),
    ([[1, 3, 0, 16]], "positive integers"),
    ("1,3,16,16", "non-empty list"),
])
def test_shapes_that_do_not_fit_are_a_clear_error(shapes, words):
    with pytest.raises(ChannelcutError, match=words) as error:
        to_onnx(conv_bn_relu(), shapes)
    assert "\n" not in str(error.value)


def test_something_that_is_not_a_model_is_a_clear_error():
    with pytest.raises(ChannelcutError, match="TorchScript file path or a torch.nn.Module"):
        to_onnx(42, [SHAPE])


def test_without_torch_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    with pytest.raises(ChannelcutError, match=r"pip install 'channelcut\[torch\]'"):
        to_onnx("model.pt", [SHAPE])


def test_importing_channelcut_does_not_import_torch():
    code = ("import sys, channelcut, channelcut.rknn, channelcut.pytorch, channelcut.api; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
