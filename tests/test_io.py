"""Loading, atomic saving, external data and path checks in channelcut.io."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from channelcut import io
from channelcut.errors import ChannelcutError


def conv_model(out_channels: int = 64) -> onnx.ModelProto:
    """x[N,3,8,8] -> Conv(w, b) -> y; w is large enough (6912 bytes at 64) to go external."""
    rng = np.random.default_rng(1)
    weights = rng.standard_normal((out_channels, 3, 3, 3)).astype(np.float32)
    w = numpy_helper.from_array(weights, "w")
    b = numpy_helper.from_array(np.arange(out_channels, dtype=np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w, b],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model_or_path, x: np.ndarray) -> np.ndarray:
    source = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) \
        else str(model_or_path)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


# --- load_model -------------------------------------------------------------------------------

def test_load_model_from_proto_is_a_private_copy():
    model = conv_model()
    before = model.SerializeToString()
    loaded = io.load_model(model)
    assert loaded is not model
    loaded.graph.initializer[0].raw_data = b"\0" * 4
    loaded.graph.node[0].name = "changed"
    assert model.SerializeToString() == before


def test_load_model_from_path(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(conv_model().SerializeToString())
    for source in (path, str(path)):
        assert io.load_model(source) == conv_model()


def test_load_missing_file_names_it(tmp_path):
    with pytest.raises(ChannelcutError) as exc:
        io.load_model(tmp_path / "nope.onnx")
    assert "nope.onnx" in one_line(exc) and "no such file" in str(exc.value)


def test_load_directory(tmp_path):
    with pytest.raises(ChannelcutError, match="is a directory"):
        io.load_model(tmp_path)


@pytest.mark.parametrize("content", [b"hello, I am not a model\n", b"PK\x03\x04zipfile", b""])
def test_load_not_onnx(tmp_path, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ChannelcutError) as exc:
        io.load_model(path)
    assert "bad.onnx" in one_line(exc) and "ONNX model" in str(exc.value)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.99])
def test_load_truncated(tmp_path, fraction):
    data = conv_model().SerializeToString()
    path = tmp_path / "cut_short.onnx"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ChannelcutError) as exc:
        io.load_model(path)
    assert "cut_short.onnx" in one_line(exc)


def test_load_missing_external_data(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "EXTERNAL_DATA_THRESHOLD", 1000)
    path = tmp_path / "big.onnx"
    io.save_model(conv_model(), path)
    os.unlink(tmp_path / "big.onnx.data")
    with pytest.raises(ChannelcutError) as exc:
        io.load_model(path)
    assert "big.onnx" in one_line(exc) and "external data" in str(exc.value)


@pytest.mark.parametrize("copy", [True, False])
def test_an_invalid_proto_is_refused_too(copy):
    model = conv_model()
    model.graph.initializer.append(model.graph.initializer[1])  # b twice
    with pytest.raises(ChannelcutError) as exc:
        io.load_model(model, copy=copy)
    assert one_line(exc).startswith("the model: not a valid ONNX model (b initializer name is")


def test_a_raw_tensor_shorter_than_its_shape_is_refused():
    model = conv_model()
    model.graph.initializer[0].raw_data = model.graph.initializer[0].raw_data[:-4]
    with pytest.raises(ChannelcutError) as exc:
        io.load_model(model)
    assert "initializer 'w' holds 6908 bytes, its shape [64, 3, 3, 3] needs 6912" in one_line(exc)


def test_a_valid_model_with_outputs_of_unknown_rank_loads():
    # onnx.checker wants a shape on every graph output; ONNX Runtime and exporters do without
    model = conv_model()
    assert not model.graph.output[0].type.tensor_type.HasField("shape")
    assert io.load_model(model).graph.output[0] == model.graph.output[0]


# --- save_model -------------------------------------------------------------------------------

def test_save_small_model_is_one_file(tmp_path):
    path = tmp_path / "out.onnx"
    io.save_model(conv_model(), path)
    assert sorted(os.listdir(tmp_path)) == ["out.onnx"]
    assert onnx.load(str(path)) == conv_model()


def test_save_overwrites_existing_output(tmp_path):
    path = tmp_path / "out.onnx"
    path.write_bytes(b"old")
    io.save_model(conv_model(), path)
    assert onnx.load(str(path)) == conv_model()


def test_save_into_missing_directory(tmp_path):
    with pytest.raises(ChannelcutError) as exc:
        io.save_model(conv_model(), tmp_path / "no_such_dir" / "out.onnx")
    assert "no_such_dir" in one_line(exc) and "does not exist" in str(exc.value)
    assert os.listdir(tmp_path) == []


def test_failed_save_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "out.onnx"
    path.write_bytes(b"previous content")

    def replace_fails(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io.os, "replace", replace_fails)
    with pytest.raises(ChannelcutError, match="No space left on device"):
        io.save_model(conv_model(), path)
    assert os.listdir(tmp_path) == ["out.onnx"]
    assert path.read_bytes() == b"previous content"


def test_save_large_model_uses_external_data(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "EXTERNAL_DATA_THRESHOLD", 1000)
    model = conv_model()
    before = model.SerializeToString()
    path = tmp_path / "big.onnx"
    io.save_model(model, path)

    assert model.SerializeToString() == before, "the caller's model must not change"
    assert sorted(os.listdir(tmp_path)) == ["big.onnx", "big.onnx.data"]
    weight_bytes = 64 * 3 * 3 * 3 * 4
    assert os.path.getsize(tmp_path / "big.onnx.data") == weight_bytes  # b (256 B) stays inline
    assert os.path.getsize(path) < weight_bytes

    loaded = io.load_model(path)
    for original, back in zip(model.graph.initializer, loaded.graph.initializer):
        np.testing.assert_array_equal(numpy_helper.to_array(original), numpy_helper.to_array(back))
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(run(path, x), run(model, x))


def test_failed_large_save_writes_neither_file(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "EXTERNAL_DATA_THRESHOLD", 1000)
    real_replace = os.replace
    calls = []

    def second_replace_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(13, "Permission denied")
        real_replace(src, dst)

    monkeypatch.setattr(io.os, "replace", second_replace_fails)
    model = conv_model()
    before = model.SerializeToString()
    with pytest.raises(ChannelcutError, match="Permission denied"):
        io.save_model(model, tmp_path / "big.onnx")
    assert model.SerializeToString() == before
    assert len(calls) == 2, "the data file went in first, then the model failed"
    assert os.listdir(tmp_path) == []


def test_save_refuses_unloaded_external_data(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "EXTERNAL_DATA_THRESHOLD", 1000)
    io.save_model(conv_model(), tmp_path / "big.onnx")
    refs_only = onnx.load(str(tmp_path / "big.onnx"), load_external_data=False)
    with pytest.raises(ChannelcutError, match="external data"):
        io.save_model(refs_only, tmp_path / "copy.onnx")
    assert not (tmp_path / "copy.onnx").exists()


def test_needs_external_data_follows_threshold(monkeypatch):
    model = conv_model()
    assert not io.needs_external_data(model)
    monkeypatch.setattr(io, "EXTERNAL_DATA_THRESHOLD", model.ByteSize() - 1)
    assert io.needs_external_data(model)


# --- check_paths ------------------------------------------------------------------------------

@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "in.onnx"
    path.write_bytes(conv_model().SerializeToString())
    return path


def test_check_paths_accepts_distinct_files(model_file, tmp_path):
    io.check_paths(model_file, tmp_path / "out.onnx")
    io.check_paths(str(model_file), str(tmp_path / "out.onnx"))


def test_check_paths_same_file(model_file, tmp_path, monkeypatch):
    with pytest.raises(ChannelcutError, match="is the input model"):
        io.check_paths(model_file, model_file)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ChannelcutError, match="is the input model"):
        io.check_paths(model_file, "./in.onnx")


def test_check_paths_symlink_and_hardlink_to_input(model_file, tmp_path):
    (tmp_path / "link.onnx").symlink_to(model_file)
    os.link(model_file, tmp_path / "hard.onnx")
    for name in ("link.onnx", "hard.onnx"):
        with pytest.raises(ChannelcutError, match="is the input model"):
            io.check_paths(model_file, tmp_path / name)


def test_check_paths_missing_output_dir(model_file, tmp_path):
    with pytest.raises(ChannelcutError) as exc:
        io.check_paths(model_file, tmp_path / "missing" / "out.onnx")
    assert "missing" in one_line(exc) and "does not exist" in str(exc.value)


def test_check_paths_output_is_directory(model_file, tmp_path):
    with pytest.raises(ChannelcutError, match="is a directory"):
        io.check_paths(model_file, tmp_path)


def test_check_paths_missing_input(tmp_path):
    with pytest.raises(ChannelcutError, match="no such file"):
        io.check_paths(tmp_path / "absent.onnx", tmp_path / "out.onnx")


def test_saved_files_get_the_usual_permissions(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "EXTERNAL_DATA_THRESHOLD", 1000)
    old_umask = os.umask(0o022)
    try:
        io.save_model(conv_model(), tmp_path / "big.onnx")
        io.write_atomic(tmp_path / "report.json", b"{}")
    finally:
        os.umask(old_umask)
    for name in ("big.onnx", "big.onnx.data", "report.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


def test_a_model_protobuf_cannot_size_needs_external_data():
    from google.protobuf.message import EncodeError

    class Huge:  # what protobuf does for a message past 2 GB: refuse to size it
        def ByteSize(self) -> int:
            raise EncodeError("Failed to serialize proto")

    assert io.needs_external_data(Huge())


def test_check_paths_protects_the_inputs_external_data(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "EXTERNAL_DATA_THRESHOLD", 1000)
    model_path = tmp_path / "in.onnx"
    io.save_model(conv_model(), model_path)  # writes in.onnx.data
    with pytest.raises(ChannelcutError, match="external data"):
        io.check_paths(model_path, tmp_path / "in.onnx.data")
    # out.onnx's data file would be in.onnx.data's hard link: still the input's data
    os.link(tmp_path / "in.onnx.data", tmp_path / "out.onnx.data")
    with pytest.raises(ChannelcutError, match="would replace .*out.onnx.data"):
        io.check_paths(model_path, tmp_path / "out.onnx")
    io.check_paths(model_path, tmp_path / "other.onnx")
