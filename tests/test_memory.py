"""A model with external data is cut with its weights left on disk: read where they lie,
verified without temporary copies, one ONNX Runtime session at a time, and written back as
external data (issue 14, memory and time)."""

from __future__ import annotations

import hashlib
import mmap
import os
import weakref
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from builders import matmul, model, node, random_feeds, weights
from channelcut import api, cli, io, verify
from channelcut.errors import ChannelcutError
from channelcut.graph import const_array, to_ir

HIDDEN, FFN = 16, 48
DEAD = [1, 5, 6, 20, 33, 47]  # MLP channels zeroed in gate and up (columns) and down (rows)


def mlp() -> onnx.ModelProto:
    """x[1,4,16] -> SwiGLU MLP (gate, up: 16x48, down: 48x16) -> y; 6 of its 48 channels dead."""
    return model(
        [matmul("x", "gate", "g", name="gate_proj"), node("Sigmoid", ["g"], ["s"]),
         node("Mul", ["g", "s"], ["silu"]), matmul("x", "up", "u", name="up_proj"),
         node("Mul", ["silu", "u"], ["h"]), matmul("h", "down", "y", name="down_proj")],
        {"x": [1, 4, HIDDEN]}, ["y"],
        {"gate": weights(HIDDEN, FFN, zero_cols=DEAD, seed=1),
         "up": weights(HIDDEN, FFN, zero_cols=DEAD, seed=2),
         "down": weights(FFN, HIDDEN, zero_rows=DEAD, seed=3)})


def saved_with_external_data(path: Path) -> Path:
    onnx.save(mlp(), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location=path.name + ".data", size_threshold=1024)
    return path


def digest(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def run_file(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def test_a_cut_of_an_external_data_model_keeps_its_weights_external(tmp_path):
    source = saved_with_external_data(tmp_path / "in.onnx")
    before = {p.name: digest(p) for p in tmp_path.iterdir()}
    out = tmp_path / "out.onnx"
    assert cli.main(["cut", str(source), "-o", str(out), "--align", "1", "-q"]) == 0
    saved = onnx.load(str(out), load_external_data=False)
    kept = FFN - len(DEAD)
    assert {t.name: list(t.dims) for t in saved.graph.initializer} == \
        {"gate": [HIDDEN, kept], "up": [HIDDEN, kept], "down": [kept, HIDDEN]}

    assert {p.name: digest(p) for p in tmp_path.iterdir() if p.name in before} == before, \
        "the input model and its data file are never modified"
    data = tmp_path / "out.onnx.data"
    weight_bytes = 3 * HIDDEN * kept * 4
    assert data.stat().st_size == weight_bytes, "every sliced weight went to the data file"
    assert out.stat().st_size < weight_bytes
    assert sorted(t.name for t in saved.graph.initializer if io.uses_external_data(t)) == \
        ["down", "gate", "up"]
    feeds = random_feeds(mlp())
    np.testing.assert_allclose(run_file(out, feeds), run_file(source, feeds), rtol=1e-5,
                               atol=1e-5)


def test_weights_of_an_external_data_model_are_read_where_they_lie(tmp_path):
    source = saved_with_external_data(tmp_path / "in.onnx")
    proto = io.load_model(source, copy=False, lazy=True)
    assert all(io.on_disk(t) is not None for t in proto.graph.initializer), \
        "no weight is read in at load"
    graph = to_ir(proto, {"x": (1, 4, HIDDEN)}).graph
    array = const_array(graph.initializers["gate"])
    base = array
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None) if not isinstance(base, memoryview) else base.obj
    assert isinstance(base, mmap.mmap), "the analysis reads a view of the mapped file, no copy"
    np.testing.assert_array_equal(array, weights(HIDDEN, FFN, zero_cols=DEAD, seed=1))


def test_verification_writes_no_copy_of_either_model(tmp_path, monkeypatch):
    """Over the size protobuf can hand over (a low threshold here), both models run with
    their weights fed as inputs: nothing is saved, no temporary directory is made."""
    monkeypatch.setattr(io, "EXTERNAL_DATA_THRESHOLD", 1000)
    source = saved_with_external_data(tmp_path / "in.onnx")
    written = []
    real_save = io.save_model
    monkeypatch.setattr(io, "save_model", lambda m, p: (written.append(p), real_save(m, p)))
    real_mkdtemp = __import__("tempfile").mkdtemp
    monkeypatch.setattr("tempfile.mkdtemp",
                        lambda *a, **k: written.append("mkdtemp") or real_mkdtemp(*a, **k))
    result = api.cut(source, verify=True, threshold=1.0)
    assert written == []
    assert [c.name for c in result.report.checks] == ["y"]
    assert result.report.checks[0].cosine == pytest.approx(1.0, abs=1e-7)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx", "in.onnx.data"]


def test_verification_holds_one_session_at_a_time(tmp_path, monkeypatch):
    source = saved_with_external_data(tmp_path / "in.onnx")
    original = io.load_model(source, copy=False, lazy=True)
    cut = api.cut(source, verify=False).model
    live: list[weakref.ref] = []
    real_session = verify._session

    def session(m, *args):
        assert all(ref() is None for ref in live), "the previous session is freed first"
        made = real_session(m, *args)
        live.append(weakref.ref(made))
        return made

    monkeypatch.setattr(verify, "_session", session)
    checks = verify.compare(original, cut, {"x": (1, 4, HIDDEN)})
    assert len(live) == 2 and checks[0].cosine == pytest.approx(1.0, abs=1e-7)


def test_cut_of_a_model_over_the_threshold_is_saved_external(tmp_path, monkeypatch):
    """A model kept inline whose cut is still past the 2 GB limit (lowered here) gets a data
    file too; a smaller inline model stays one file."""
    source = tmp_path / "in.onnx"
    source.write_bytes(mlp().SerializeToString())
    result = api.cut(source)
    io.save_model(result.model, tmp_path / "small.onnx")
    assert not (tmp_path / "small.onnx.data").exists()
    monkeypatch.setattr(io, "EXTERNAL_DATA_THRESHOLD", 1000)
    io.save_model(result.model, tmp_path / "big.onnx")
    assert (tmp_path / "big.onnx.data").exists()


def test_needs_external_data_counts_raw_data_from_the_shapes():
    m = mlp()
    estimate = io.serialized_bytes(m)
    assert m.ByteSize() <= estimate <= m.ByteSize() + 16 * len(m.graph.initializer)


@pytest.mark.parametrize("location", ["../elsewhere.data", "/etc/passwd"])
def test_a_data_location_outside_the_models_folder_is_refused(tmp_path, location):
    source = saved_with_external_data(tmp_path / "in.onnx")
    proto = onnx.load(str(source), load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    source.write_bytes(proto.SerializeToString())
    with pytest.raises(ChannelcutError) as exc:
        api.cut(source, verify=False)
    assert "\n" not in str(exc.value) and "in.onnx" in str(exc.value)
    assert "beside the model" in str(exc.value)


def test_a_data_file_shorter_than_the_model_says_is_refused(tmp_path):
    source = saved_with_external_data(tmp_path / "in.onnx")
    data = tmp_path / "in.onnx.data"
    data.write_bytes(data.read_bytes()[:-8])
    with pytest.raises(ChannelcutError, match="exceeds available data"):
        io.load_model(source, lazy=True)
    os.unlink(data)
    with pytest.raises(ChannelcutError, match="no such file"):
        io.load_model(source, lazy=True)


def test_the_ort_cpu_guard_times_an_external_data_model(tmp_path):
    """The guard's sessions read the model from a file: one whose weights stayed on disk
    (absolute references, which ONNX Runtime refuses in memory) is saved for it first."""
    source = saved_with_external_data(tmp_path / "in.onnx")
    result = api.cut(source, target="ort-cpu", align=1, verify=False)
    assert set(result.report.latencies) >= {"cut", "original"}


def test_to_proto_moves_the_weights_into_the_proto_one_at_a_time(monkeypatch):
    """graph.to_proto is ir.to_proto, and each moved weight is then read from the proto."""
    import onnx_ir as ir

    from channelcut import graph

    monkeypatch.setattr(graph, "MOVED_TENSOR_BYTES", 1)
    ir_model = ir.from_proto(mlp())
    for value in ir_model.graph.initializers.values():  # weights a cut made: numpy arrays
        value.const_value = ir.Tensor(value.const_value.numpy().copy(), name=value.name)
    expected = ir.to_proto(ir_model).SerializeToString()
    proto = graph.to_proto(ir_model)
    assert proto.SerializeToString() == expected
    for value in ir_model.graph.initializers.values():
        assert isinstance(value.const_value, ir.serde.TensorProtoTensor)
    np.testing.assert_array_equal(ir_model.graph.initializers["up"].const_value.numpy(),
                                  weights(HIDDEN, FFN, zero_cols=DEAD, seed=2))


def test_result_save_writes_out_the_weights_a_cut_left_in_the_input_file(tmp_path):
    """The cut of a file with external data refers to the weights it kept whole (here the
    head) by absolute path into the input's data file; `CutResult.save` writes them beside
    the output, so the saved model passes onnx's checker and loads in ONNX Runtime, and does
    not depend on the input's files."""
    m = mlp()
    m.graph.node.append(matmul("y", "head", "z", name="head_proj"))
    m.graph.initializer.append(onnx.numpy_helper.from_array(weights(HIDDEN, 32, seed=4), "head"))
    m.graph.output[0].name = "z"
    m.graph.output[0].type.tensor_type.shape.dim[-1].dim_value = 32
    source = tmp_path / "in.onnx"
    onnx.save(m, str(source), save_as_external_data=True, all_tensors_to_one_file=True,
              location="in.onnx.data", size_threshold=1024)
    result = api.cut(str(source), align=1)
    head = next(t for t in result.model.graph.initializer if t.name == "head")
    assert io.on_disk(head) is not None, "kept whole, it is still read from the input's file"
    out = tmp_path / "saved" / "out.onnx"
    out.parent.mkdir()
    result.save(out)
    onnx.checker.check_model(str(out), full_check=True)
    feeds = random_feeds(m)
    want = run_file(source, feeds)
    for name in ("in.onnx", "in.onnx.data"):
        (tmp_path / name).rename(tmp_path / f"moved-{name}")
    np.testing.assert_allclose(run_file(out, feeds), want, rtol=1e-5, atol=1e-5)


# The name ONNX Runtime gives the Cast to float32 it inserts before a float16 input of a node
# that has no float16 kernel (onnxruntime/core/optimizer/insert_cast_transformer.cc).
ORT_CAST_PREFIX = "InsertedPrecisionFreeCast_"


def float32_copies_alive(profile: Path, weights: dict[str, int], readers: dict[str, set[str]]
                         ) -> int:
    """Most bytes of float32 copies of `weights` (name -> float32 bytes) alive at once in the
    node order an ONNX Runtime profile records: from the Cast that makes a copy until the
    last node that reads it (`readers`) has run."""
    import json  # noqa: PLC0415

    alive: dict[str, set[str]] = {}
    peak = 0
    for event in json.loads(profile.read_text()):
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        name = event["name"][:-len("_kernel_time")]
        weight = name[len(ORT_CAST_PREFIX):] if name.startswith(ORT_CAST_PREFIX) else None
        if weight in weights:
            alive[weight] = set(readers[weight])
        for w in list(alive):
            alive[w].discard(name)
            if not alive[w]:
                del alive[w]
        peak = max(peak, sum(weights[w] for w in alive))
    return peak


def test_verification_of_a_float16_model_casts_one_weight_at_a_time(tmp_path, monkeypatch):
    """ONNX Runtime's CPU provider has no float16 MatMul (on x86): even with optimizations
    off it casts each float16 weight to float32 before its MatMul. Verification runs each
    Cast just before its reader, so one float32 copy is alive at a time; ONNX Runtime's
    default order ran them first, the copies of most weights alive at once (5.7x a 1 GB
    float16 decoder's size in RSS, issue 14)."""
    from test_dtypes import _bench_module  # noqa: PLC0415 - bench/llm_scale.py by path

    bench = _bench_module()
    built = bench.build(tmp_path / "m.onnx", bench.Shape(4, 128, 2, 320), "fp16")
    original = io.load_model(built.path, copy=False, lazy=True)
    assert verify._weights_as_inputs(original), "weights on disk: fed as inputs"
    projections = {t.name: 4 * int(np.prod(t.dims)) for t in original.graph.initializer
                   if len(t.dims) == 2}
    readers = {name: {n.name for n in original.graph.node if name in n.input}
               for name in projections}
    real_session = ort.InferenceSession

    def profiled(model, options, *args, **kwargs):
        options.enable_profiling = True  # written when the session is freed
        options.profile_file_prefix = str(tmp_path / f"ort{len(list(tmp_path.glob('ort*')))}")
        return real_session(model, options, *args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", profiled)
    checks = verify.compare(original, original, {"x": (bench.BATCH, bench.SEQ, 128)})
    assert [c.cosine for c in checks] == [1.0]
    profiles = sorted(tmp_path.glob("ort*.json"))
    assert len(profiles) == 2, "one profile per session: the original's and the cut's"
    if not any(ORT_CAST_PREFIX in p.read_text() for p in profiles):
        pytest.skip("this ONNX Runtime computes float16 MatMul itself: no float32 copies")
    peaks = [float32_copies_alive(p, projections, readers) for p in profiles]
    assert peaks == [max(projections.values())] * 2, \
        f"float32 copies alive at once: {peaks} bytes of {sum(projections.values())}"
