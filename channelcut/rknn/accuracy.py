"""accuracy_analysis: every tensor of the built model against the float original, as RKNN does.

Per tensor, cosine similarity and euclidean distance (the L2 norm of the difference) against
the "golden" float value, two ways (RKNN-Toolkit2's): "entire" runs the whole built network,
so errors accumulate layer by layer; "single" feeds every layer the golden values of its
inputs (through the same quantize/dequantize pairs as the built model), so each layer's own
error shows. Golden values come from the loaded model, its cut channels left out (the cut's
channel map), and from the float cut model for tensors the cut created. A quantized tensor
`t` is compared as the built model's consumers see it: after its QuantizeLinear and
DequantizeLinear. `error_lines` writes RKNN-Toolkit2's error_analysis.txt layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx

from channelcut.rknn import simulator
from channelcut.verify import graph_inputs

# onnxruntime.quantization's names: a quantized graph output's producer writes
# t + QUANT_INPUT_SUFFIX and the DequantizeLinear writes `t`.
QUANT_INPUT_SUFFIX = "_QuantizeLinear_Input"
GOLDEN_SUFFIX = "__golden"
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
HEADER = [
    "# simulator_error: calculate the output error of each layer of the simulator (compared "
    "to the 'golden' value).",
    "#              entire: output error of each layer between 'golden' and 'simulator', these "
    "errors will accumulate layer by layer.",
    "#              single: single-layer output error between 'golden' and 'simulator', can "
    "better reflect the single-layer accuracy of the simulator.",
    "",
]


@dataclass(frozen=True)
class LayerError:
    """One tensor of the built model: its errors against the golden value (None: no value)."""

    label: str  # "[Conv] name", "[Input] name": RKNN's layer_name
    name: str
    shape: tuple[int, ...]
    entire: tuple[float, float] | None  # (cosine, euclidean)
    single: tuple[float, float] | None
    max_abs_error: float  # entire, for the per-output summary


def run_all(model: onnx.ModelProto, model_feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every tensor the model computes, by name (no graph optimisation, so none is fused)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    order = list(dict.fromkeys(o for node in graph.node for o in node.output if o))
    present = {o.name for o in graph.output}
    # ORT accepts an output without a type; it takes the one it infers.
    graph.output.extend(onnx.ValueInfoProto(name=n) for n in order if n not in present)
    unoptimized = simulator.session(copy, optimize=False)
    names = [o.name for o in unoptimized.get_outputs()]
    return dict(zip(names, simulator.run(unoptimized, model_feeds)))


def analyse(reference: onnx.ModelProto, float_built: onnx.ModelProto, built: onnx.ModelProto,
            model_feeds: dict[str, np.ndarray],
            channel_map: dict[str, tuple[int, np.ndarray]]) -> list[LayerError]:
    """Entire and single errors of every tensor of the float cut model, in execution order."""
    loaded, floats = run_all(reference, model_feeds), run_all(float_built, model_feeds)
    golden = dict(model_feeds)
    for name, value in floats.items():
        want = loaded.get(name)
        if want is not None and name in channel_map:
            axis, kept = channel_map[name]
            want = np.take(want, kept, axis=axis)
        golden[name] = want if want is not None and want.shape == value.shape else value
    entire = run_all(built, model_feeds) | model_feeds
    single_model, golden_inputs = _fed_golden(built, golden)
    single = run_all(single_model, model_feeds | {n + GOLDEN_SUFFIX: golden[n]
                                                  for n in golden_inputs})
    single |= model_feeds
    quantizers, dequantized = _output_quantizers(built), _dequantized_names(built)
    rows = []
    labels = [(f"[Input] {v.name}", v.name) for v in graph_inputs(float_built)]
    labels += [(f"[{node.op_type}] {out}", out) for node in float_built.graph.node
               for out in node.output if out]
    for label, name in labels:
        want = golden[name]
        got_entire = entire.get(dequantized.get(name, name))
        raw_single = single.get(name, single.get(name + QUANT_INPUT_SUFFIX))
        if name in quantizers and raw_single is not None:
            raw_single = _fake_quantize(raw_single, *quantizers[name])
        rows.append(LayerError(label, name, tuple(np.shape(got_entire if got_entire is not None
                                                           else want)),
                               _errors(want, got_entire), _errors(want, raw_single),
                               _max_abs(want, got_entire)))
    return rows


def _fed_golden(built: onnx.ModelProto,
                golden: dict[str, np.ndarray]) -> tuple[onnx.ModelProto, set[str]]:
    """The built model with every computed tensor a node reads replaced by a golden input."""
    model = onnx.ModelProto()
    model.CopyFrom(built)
    graph = model.graph
    constants = {t.name for t in graph.initializer} | {v.name for v in graph.input}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    replaced = set()
    for node in graph.node:
        for index, name in enumerate(node.input):
            key = name.removesuffix(QUANT_INPUT_SUFFIX)
            if name and name not in constants and key in golden:
                node.input[index] = key + GOLDEN_SUFFIX
                replaced.add(key)
    for name in sorted(replaced):
        value = golden[name]
        graph.input.append(onnx.helper.make_tensor_value_info(
            name + GOLDEN_SUFFIX, onnx.helper.np_dtype_to_tensor_dtype(value.dtype), value.shape))
    return model, replaced


def _dequantized_names(built: onnx.ModelProto) -> dict[str, str]:
    """Tensor -> the DequantizeLinear output its consumers read, where it is quantized."""
    readers: dict[str, onnx.NodeProto] = {}
    for node in built.graph.node:
        if node.op_type == "DequantizeLinear":
            readers[node.input[0]] = node
    result = {}
    for node in built.graph.node:
        if node.op_type == "QuantizeLinear" and node.output[0] in readers:
            result[node.input[0].removesuffix(QUANT_INPUT_SUFFIX)] = \
                readers[node.output[0]].output[0]
    return result


def _output_quantizers(built: onnx.ModelProto) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Tensor -> (scale, zero point) of the QuantizeLinear that reads it (activations only)."""
    constants = {t.name: onnx.numpy_helper.to_array(t) for t in built.graph.initializer}
    result = {}
    for node in built.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in constants and \
                len(node.input) > 2 and node.input[1] in constants and node.input[2] in constants:
            result[node.input[0].removesuffix(QUANT_INPUT_SUFFIX)] = (constants[node.input[1]],
                                                                      constants[node.input[2]])
    return result


def _fake_quantize(value: np.ndarray, scale: np.ndarray, zero: np.ndarray) -> np.ndarray:
    """QuantizeLinear then DequantizeLinear with a per-tensor scale (round half to even)."""
    info = np.iinfo(zero.dtype)
    scale32 = scale.astype(np.float32)
    quantized = np.clip(np.rint(value / scale32) + zero.astype(np.float32), info.min, info.max)
    return ((quantized - zero.astype(np.float32)) * scale32).astype(value.dtype)


def _errors(want: np.ndarray, got: np.ndarray | None) -> tuple[float, float] | None:
    """(cosine, euclidean distance); None when the built model has no such value."""
    if got is None:
        return None
    want, got = np.asarray(want), np.asarray(got)
    if want.shape != got.shape or want.dtype.kind not in "biuf" or got.dtype.kind not in "biuf":
        same = want.shape == got.shape and np.array_equal(want, got)
        return (1.0, 0.0) if same else (math.nan, math.nan)
    a, b = want.astype(np.float64).ravel(), got.astype(np.float64).ravel()
    if np.array_equal(a, b, equal_nan=True):
        return 1.0, 0.0
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    return (float(np.dot(a, b) / norms) if norms > 0 else 0.0), float(np.linalg.norm(a - b))


def _max_abs(want: np.ndarray, got: np.ndarray | None) -> float:
    if got is None or np.shape(want) != np.shape(got) or np.size(want) == 0:
        return 0.0 if got is not None and np.array_equal(want, got) else math.nan
    return float(np.max(np.abs(np.asarray(want, np.float64) - np.asarray(got, np.float64))))


def error_lines(rows: list[LayerError]) -> list[str]:
    """error_analysis.txt as RKNN-Toolkit2 2.5.0 writes it (its widths follow the names)."""
    width = max((len(r.label) for r in rows), default=0) + 5
    lines = HEADER + [
        "layer_name".ljust(width + 9) + "simulator_error" + " " * 20,
        " " * (width + 5) + "entire" + " " * 14 + "single" + " " * 13,
        " " * (width + 2) + "cos      euc        cos      euc          ",
        "-" * (width + 40),
    ]
    for row in rows:
        if row.entire is None and row.single is None:
            lines.append(row.label.ljust(width))
            continue
        pairs = [f"{cos:.5f} | {euc:.5f}" for cos, euc in (row.entire or (math.nan, math.nan),
                                                            row.single or (math.nan, math.nan))]
        lines.append(row.label.ljust(width) + pairs[0] + "   " + pairs[1] + " " * 7)
    return lines
