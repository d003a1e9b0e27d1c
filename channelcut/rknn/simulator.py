"""The RKNN facade's simulator: the model in ONNX Runtime on the CPU, fed as RKNN feeds it.

RKNN models have static input shapes and take 4-D inputs NHWC: `check_sizes` reads
input_size_list, `fix_input_shapes` gives every input its static shape, and `feeds` checks the
user's arrays against it and turns them into ONNX Runtime's NCHW feeds. `profile` times each
node (eval_perf).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from channelcut import io
from channelcut.errors import ChannelcutError
from channelcut.verify import graph_inputs, random_inputs

DATA_FORMATS = ("nhwc", "nchw")
SIZE_EXAMPLE = "for example [[3, 224, 224]] for one image input (batch 1 is implied)"
# eval_perf: timed runs after one warm-up run, whose times (allocations, caches) are dropped.
PERF_RUNS = 10


# --- the model's interface -----------------------------------------------------------------

def input_names(model: onnx.ModelProto) -> list[str]:
    """Names of the inputs a caller feeds, in order."""
    return [v.name for v in graph_inputs(model)]


def output_names(model: onnx.ModelProto) -> list[str]:
    """Names of the graph outputs, in order."""
    return [v.name for v in model.graph.output]


def input_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Shapes of the inputs, static once fix_input_shapes has run."""
    return {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in graph_inputs(model)}


def describe_inputs(model: onnx.ModelProto) -> str:
    """`name [1, 3, 224, 224], ...` for a log line."""
    return ", ".join(f"{name} {shape}" for name, shape in input_shapes(model).items())


def check_sizes(sizes: Any) -> list[tuple[int, ...]]:
    """input_size_list as tuples of dims, one per input, without the batch dimension."""
    if isinstance(sizes, str | bytes) or not isinstance(sizes, Sequence) or not sizes or \
            not all(isinstance(s, Sequence) and not isinstance(s, str) for s in sizes):
        raise ChannelcutError(f"input_size_list must be a list of sizes, {SIZE_EXAMPLE}")
    for size in sizes:
        if not size or not all(isinstance(d, Integral) and not isinstance(d, bool) and d > 0
                               for d in size):
            raise ChannelcutError(f"input_size_list entry {list(size)} is not a list of "
                                  f"positive integers, {SIZE_EXAMPLE}")
    return [tuple(int(d) for d in size) for size in sizes]


def fix_input_shapes(model: onnx.ModelProto, sizes: list[tuple[int, ...]] | None) -> None:
    """Give every input a static shape, as RKNN models have: (1, *size), or dynamic dims 1."""
    inputs = graph_inputs(model)
    names = ", ".join(v.name for v in inputs)
    if sizes is not None and len(sizes) != len(inputs):
        raise ChannelcutError(f"input_size_list has {len(sizes)} sizes, the model has "
                              f"{len(inputs)} inputs ({names}); give one size per input")
    for index, value in enumerate(inputs):
        if not value.type.HasField("tensor_type"):
            raise ChannelcutError(f"input {value.name!r} is not a tensor; the simulator feeds "
                                  "tensors only")
        tensor_type = value.type.tensor_type
        declared = ([d.dim_value if d.HasField("dim_value") else None
                     for d in tensor_type.shape.dim] if tensor_type.HasField("shape") else None)
        if sizes is None:
            if declared is None:
                raise ChannelcutError(f"input {value.name!r} has no declared shape; give its "
                                      f"size with input_size_list, {SIZE_EXAMPLE}")
            shape = [1 if d is None else d for d in declared]
        else:
            shape = [1, *sizes[index]]
            shown = ["?" if d is None else d for d in declared or []]
            fits = declared is None or (len(declared) == len(shape) and all(
                want is None or want == got for want, got in zip(declared, shape)))
            if not fits:
                raise ChannelcutError(f"input_size_list entry {list(sizes[index])} does not fit "
                                      f"input {value.name!r} of shape {shown}; give its size "
                                      "without the batch dimension")
        tensor_type.shape.ClearField("dim")
        for dim in shape:
            tensor_type.shape.dim.add().dim_value = dim


# --- sessions and feeds --------------------------------------------------------------------

def session(model: onnx.ModelProto, profile_prefix: str | None = None,
            optimize: bool = True) -> Any:
    """An ONNX Runtime CPU session; `optimize=False` keeps every intermediate tensor as is."""
    import onnxruntime as ort  # noqa: PLC0415 - heavy import, only the runtime needs it

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: ORT's warnings are not the user's business
    # A quantized build's fused int8 kernels multiply uint8 activations by int8 weights with
    # VPMADDUBSW on x86 CPUs without VNNI (AVX2, AVX-512F): each pair of products is summed in
    # a saturating int16, so a conv whose inputs sit near the top of their range comes out
    # clipped (cos 0.93 against the float model on an AVX2 machine, 0.99995 unfused). An NPU
    # accumulates in int32; this option makes ORT do the same (its U8U8 kernels, slower; ORT
    # documents it for x64 AVX2/AVX-512 only). A float model has no int8 kernel to change.
    options.add_session_config_entry("session.x64quantprecision", "1")
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    providers = ["CPUExecutionProvider"]
    try:
        if not io.needs_external_data(model):
            return ort.InferenceSession(model.SerializeToString(), options, providers=providers)
        # Protobuf cannot hand a >2 GB model over in memory: ORT reads it from disk instead.
        with tempfile.TemporaryDirectory(prefix="channelcut-") as tmp:
            io.save_model(model, Path(tmp) / "model.onnx")
            return ort.InferenceSession(str(Path(tmp) / "model.onnx"), options,
                                        providers=providers)
    except Exception as exc:  # noqa: BLE001 - ORT's error types share no base class
        raise ChannelcutError(f"ONNX Runtime cannot load the model ({io.error_line(exc)}); "
                              "check that it is a valid ONNX model") from None


def feeds(model: onnx.ModelProto, inputs: Any,
          data_format: str | Sequence[str]) -> dict[str, np.ndarray]:
    """Inputs by name, NCHW and of the model's dtype; one E-worthy error for any mismatch."""
    values = graph_inputs(model)
    names = ", ".join(v.name for v in values)
    if not isinstance(inputs, list | tuple):
        raise ChannelcutError("inputs must be a list of numpy arrays, one per model input, for "
                              "example inputs=[img]")
    if len(inputs) != len(values):
        raise ChannelcutError(f"got {len(inputs)} inputs, the model has {len(values)} ({names}); "
                              "pass one array per input")
    formats = [data_format] * len(values) if isinstance(data_format, str) else list(data_format)
    formats = [f.lower() if isinstance(f, str) else f for f in formats]  # 'NHWC' works too
    if len(formats) != len(values) or any(f not in DATA_FORMATS for f in formats):
        raise ChannelcutError(f"data_format must be 'nhwc' or 'nchw', or a list of them with one "
                              f"per input; got {data_format!r}")
    result = {}
    for index, (value, given, layout) in enumerate(zip(values, inputs, formats)):
        shape = tuple(d.dim_value for d in value.type.tensor_type.shape.dim)
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))
        array = np.asarray(given)
        if array.dtype.kind not in "biuf":
            raise ChannelcutError(f"input {index} is an array of {array.dtype}; give numbers")
        if array.ndim == len(shape) - 1:
            array = array[np.newaxis]  # one image without the batch axis, as RKNN accepts
        channels_last = len(shape) == 4 and layout == "nhwc"
        if channels_last and array.ndim == 4:
            array = array.transpose(0, 3, 1, 2)
        if array.shape != shape:
            expected = (shape[0], shape[2], shape[3], shape[1]) if channels_last else shape
            layout_name = f" in {layout.upper()}" if len(shape) == 4 else ""
            raise ChannelcutError(f"input {index} has shape {list(np.shape(given))}; the model "
                                  f"expects {list(expected)}{layout_name}")
        result[value.name] = np.ascontiguousarray(array, dtype=dtype)
    return result


def random_feeds(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Seeded random inputs of the model's static input shapes."""
    return random_inputs(model, {k: tuple(v) for k, v in input_shapes(model).items()})


def pass_through_mask(value: Sequence[int] | None, count: int) -> tuple[int, ...]:
    """inference's inputs_pass_through as one 0 or 1 per input (1: no preprocessing)."""
    if value is None:
        return (0,) * count
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != count or \
            any(v not in (0, 1) for v in value):
        raise ChannelcutError(f"inputs_pass_through must be a list of {count} values, 0 or 1 "
                              "(1: feed that input without the preprocessing)")
    return tuple(int(v) for v in value)


def run(model_session: Any, model_feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Every graph output, in order; an ORT failure becomes one ChannelcutError."""
    try:
        return model_session.run(None, model_feeds)
    except Exception as exc:  # noqa: BLE001 - ORT's error types share no base class
        raise ChannelcutError(f"the simulator failed to run the model "
                              f"({io.error_line(exc)})") from None


# --- eval_perf -----------------------------------------------------------------------------

def profile(model: onnx.ModelProto, model_feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    """Mean kernel time per node over PERF_RUNS runs, from ONNX Runtime's JSON profile."""
    with tempfile.TemporaryDirectory(prefix="channelcut-perf-") as tmp:
        profiled = session(model, profile_prefix=str(Path(tmp) / "profile"))
        for _ in range(PERF_RUNS + 1):
            run(profiled, model_feeds)
        events = json.loads(Path(profiled.end_profiling()).read_text(encoding="utf-8"))
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                  if e.get("cat") == "Session" and e.get("name") == "model_run")[1:]
    layers: dict[str, dict[str, Any]] = {}  # in execution order: dicts keep insertion order
    for event in events:
        name = event.get("name", "")
        if event.get("cat") != "Node" or not name.endswith("_kernel_time") or \
                not any(start <= event["ts"] <= end for start, end in runs):
            continue
        node = name.removesuffix("_kernel_time")
        layer = layers.setdefault(node, {"node": node, "op_type": event["args"].get("op_name"),
                                         "time_us": 0.0})
        layer["time_us"] += event["dur"] / len(runs)
    total = sum(layer["time_us"] for layer in layers.values())
    return {"layers": list(layers.values()), "total_time_us": total, "runs": len(runs)}


def perf_lines(perf: dict[str, Any]) -> list[str]:
    """eval_perf's table: one row per node, then the total time and FPS."""
    row = "{:<20}{:<48}{:>12}".format
    lines = [f"Performance on the ONNX Runtime CPU simulator (mean of {perf['runs']} runs)",
             row("op type", "node", "time (us)")]
    lines += [row(layer["op_type"] or "?", layer["node"], f"{layer['time_us']:.1f}")
              for layer in perf["layers"]]
    total = perf["total_time_us"]
    lines.append(f"Total time (us): {total:.1f}")
    if total > 0:
        lines.append(f"FPS: {1e6 / total:.1f}")
    return lines
