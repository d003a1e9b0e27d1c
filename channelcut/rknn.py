"""RKNN-Toolkit style facade: a user's conversion script runs with one import changed.

    from channelcut.rknn import RKNN

The call sequence is RKNN-Toolkit's (config, load_pytorch / load_onnx, build, export_rknn,
init_runtime, inference, release); the model runs in ONNX Runtime on the CPU (the simulator),
since no Rockchip NPU is reachable here, and "rknn" files are ONNX models.

Conventions, RKNN-Toolkit's: methods return 0 on success and -1 on failure after one `E` line
that says what to do; `inference` returns the list of outputs, or None after an `E` line;
`eval_perf` returns its result dict, or None. Log lines start with `I ` (only with
verbose=True), `W ` or `E ` (always) and go to stdout, and to `verbose_file` when given.

Preprocessing (config's mean_values, std_values, reorder_channel) becomes nodes in front of
each model input, so `inference` takes raw pixels as RKNN does. Order: the channels are first
reordered (out[c] = in[order[c]]), then the mean is subtracted and the result divided by std;
mean and std are given in the order of the model's channels, i.e. after the reorder.
"""

from __future__ import annotations

import functools
import json
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import onnx

from channelcut import io
from channelcut.errors import ChannelcutError

TOOLKIT1_TARGETS = ("rk1806", "rk1808", "rk3399pro", "rv1109", "rv1126")
TOOLKIT2_TARGETS = ("rk3562", "rk3566", "rk3568", "rk3576", "rk3588", "rv1103", "rv1106")
TARGETS = TOOLKIT1_TARGETS + TOOLKIT2_TARGETS
FAILED = -1
DATA_FORMATS = ("nhwc", "nchw")
SIZE_EXAMPLE = "for example [[3, 224, 224]] for one image input (batch 1 is implied)"

Result = TypeVar("Result")


class _Log:
    """Writes `I`/`W`/`E` lines to stdout and, when given, appends them to a file."""

    def __init__(self, verbose: bool, verbose_file: str | Path | None) -> None:
        self.verbose, self.file = verbose, verbose_file

    def info(self, message: str) -> None:
        if self.verbose:
            self.line(f"I {message}")

    def warn(self, message: str) -> None:
        self.line(f"W {message}")

    def error(self, message: str) -> None:
        self.line(f"E {message}")

    def line(self, text: str) -> None:
        print(text, flush=True)
        if self.file is None:
            return
        try:
            with open(self.file, "a", encoding="utf-8") as file:
                file.write(text + "\n")
        except OSError as exc:
            self.file = None  # say it once, then keep logging to stdout only
            self.warn(f"cannot write verbose_file ({exc.strerror or exc}); logging to stdout only")


def _reports_errors(on_error: Any) -> Callable[[Callable[..., Result]], Callable[..., Result]]:
    """Turn a ChannelcutError into one `E` line and `on_error`, RKNN-Toolkit's convention."""

    def decorate(method: Callable[..., Result]) -> Callable[..., Result]:
        @functools.wraps(method)
        def wrapper(self: RKNN, *args: Any, **kwargs: Any) -> Result:
            try:
                return method(self, *args, **kwargs)
            except ChannelcutError as exc:
                self._log.error(str(exc))
                return on_error
        return wrapper
    return decorate


class RKNN:
    """One conversion: configure, load a model, build (and prune), export, run, release."""

    def __init__(self, verbose: bool = False, verbose_file: str | Path | None = None) -> None:
        self._log = _Log(verbose, verbose_file)
        self._preprocess_config: dict[str, Any] = {}
        self._pruning = False
        self.release()

    # --- configuration and loading -------------------------------------------------------

    @_reports_errors(FAILED)
    def config(self, mean_values: Any = None, std_values: Any = None,
               reorder_channel: str | Sequence[str] | None = None,
               target_platform: str | Sequence[str] | None = None,
               model_pruning: bool = False, **other: Any) -> int:
        """Set preprocessing, the target platform(s) and pruning; used by the next `build`."""
        if target_platform is not None:
            _check_targets(target_platform, "target_platform")
        preprocess = {
            "mean_values": _per_input_numbers(mean_values, "mean_values"),
            "std_values": _per_input_numbers(std_values, "std_values"),
            "reorder_channel": _per_input_orders(reorder_channel),
        }
        if any(0 in values for values in preprocess["std_values"] or []):
            raise ChannelcutError("std_values must not contain 0; the input is divided by them")
        # Only a config that is valid as a whole replaces the previous one.
        self._preprocess_config, self._pruning = preprocess, bool(model_pruning)
        if other:
            self._log.warn(f"config: the simulator does not use {', '.join(sorted(other))}; "
                           "ignored")
        return 0

    @_reports_errors(FAILED)
    def load_pytorch(self, model: Any, input_size_list: Sequence[Sequence[int]]) -> int:
        """Load a TorchScript file (torch.jit.save) or an nn.Module; sizes without the batch."""
        from channelcut import pytorch  # noqa: PLC0415 - needs torch, an optional extra

        shapes = [(1, *size) for size in _check_sizes(input_size_list)]
        self._set_loaded(pytorch.to_onnx(model, shapes), None)
        return 0

    @_reports_errors(FAILED)
    def load_onnx(self, model: str | Path | onnx.ModelProto,
                  inputs: Sequence[str] | None = None,
                  input_size_list: Sequence[Sequence[int]] | None = None,
                  outputs: Sequence[str] | None = None) -> int:
        """Load an ONNX model; `inputs`/`outputs` name tensors to cut the graph at."""
        proto = io.load_model(model)
        if inputs is not None or outputs is not None:
            proto = _extract(proto, inputs, outputs)
        sizes = None if input_size_list is None else _check_sizes(input_size_list)
        self._set_loaded(proto, sizes)
        return 0

    def _set_loaded(self, model: onnx.ModelProto, sizes: list[tuple[int, ...]] | None) -> None:
        self.release()
        _fix_input_shapes(model, sizes)
        self._loaded = model
        self._log.info(f"loaded a model with inputs {_describe_inputs(model)}")

    # --- build and export ----------------------------------------------------------------

    @_reports_errors(FAILED)
    def build(self, do_quantization: bool = False, dataset: str | None = None,
              pre_compile: bool = False, **other: Any) -> int:
        """Add the preprocessing and, with model_pruning, cut the dead channels out."""
        if self._loaded is None:
            raise ChannelcutError("no model loaded; call load_pytorch or load_onnx before build")
        if do_quantization:
            raise ChannelcutError("quantization is not available yet in channelcut; call "
                                  "build(do_quantization=False)")
        ignored = [name for name, used in (("dataset", dataset is not None),
                                           ("pre_compile", pre_compile)) if used]
        if ignored or other:
            self._log.warn(f"build: the simulator does not use "
                           f"{', '.join(ignored + sorted(other))}; ignored")
        steps = _preprocess_steps(self._loaded, self._preprocess_config)
        core, channel_map = self._loaded, {}
        if self._pruning:
            from channelcut.api import cut  # noqa: PLC0415 - keeps `import rknn` light
            from channelcut.report import const_change_lines, summary_lines  # noqa: PLC0415

            # fold=False: RKNN-Toolkit's model_pruning removes only zero or unread channels.
            result = cut(self._loaded, input_shapes=_input_shapes(self._loaded), fold=False)
            core, channel_map = result.model, result.channel_map
            self._log.info("Pruning: const change detail")
            for line in const_change_lines(result.report) + summary_lines(result.report):
                self._log.info(line)
        self._steps, self._core, self._channel_map = steps, core, channel_map
        self._reference = _with_preprocessing(self._loaded, steps)
        self._built = _with_preprocessing(core, steps)
        self._sessions, self._runtime_ready = {}, False  # a new model needs init_runtime again
        return 0

    @_reports_errors(FAILED)
    def export_onnx(self, export_path: str | Path) -> int:
        """Write the built model as ONNX."""
        io.save_model(self._require_built("export_onnx"), export_path)
        return 0

    @_reports_errors(FAILED)
    def export_rknn(self, export_path: str | Path) -> int:
        """Write the built model, as ONNX, to the path a script gives for its .rknn file."""
        io.save_model(self._require_built("export_rknn"), export_path)
        self._log.warn(f"{export_path} is an ONNX model, not Rockchip's proprietary RKNN binary; "
                       "it loads in ONNX Runtime or in RKNN-Toolkit's load_onnx")
        return 0

    @_reports_errors(FAILED)
    def load_rknn(self, path: str | Path) -> int:
        """Read back a file written by export_rknn (an ONNX model), ready for init_runtime."""
        try:
            model = io.load_model(path)
        except ChannelcutError as exc:
            raise ChannelcutError(f"{exc}; load_rknn reads the ONNX files that channelcut's "
                                  "export_rknn writes, not Rockchip's RKNN binaries") from None
        self.release()
        _fix_input_shapes(model, None)
        self._built = model
        return 0

    def _require_built(self, method: str) -> onnx.ModelProto:
        if self._built is None:
            raise ChannelcutError(f"no built model; call build (or load_rknn) before {method}")
        return self._built

    # --- runtime -------------------------------------------------------------------------

    @_reports_errors(FAILED)
    def init_runtime(self, target: str | None = None, device_id: str | None = None,
                     perf_debug: bool = False, **other: Any) -> int:
        """Start the ONNX Runtime simulator; an NPU target falls back to it with a `W` line."""
        model = self._require_built("init_runtime")
        if target is not None:
            _check_targets(target, "target")
            device = f" (device {device_id})" if device_id is not None else ""
            self._log.warn(f"target {target}{device}: no Rockchip NPU is reachable here; "
                           "running the ONNX Runtime CPU simulator instead")
        if other:
            self._log.warn(f"init_runtime: the simulator does not use "
                           f"{', '.join(sorted(other))}; ignored")
        self._sessions = {(): _session(model)}
        self._runtime_ready = True
        return 0

    @_reports_errors(None)
    def inference(self, inputs: Sequence[np.ndarray], data_format: str | Sequence[str] = "nhwc",
                  inputs_pass_through: Sequence[int] | None = None,
                  **other: Any) -> list[np.ndarray] | None:
        """Run the built model on raw inputs (4-D ones NHWC unless data_format says 'nchw').

        `inputs_pass_through[i] = 1` feeds input i to the model without the preprocessing.
        Returns the outputs, or None after an `E` line.
        """
        if not self._runtime_ready:
            raise ChannelcutError("the runtime is not initialised; call init_runtime before "
                                  "inference")
        if other:
            self._log.warn(f"inference: the simulator does not use "
                           f"{', '.join(sorted(other))}; ignored")
        feeds = _feeds(self._built, inputs, data_format)
        mask = _pass_through_mask(inputs_pass_through, len(feeds))
        return _run(self._session_for(mask), feeds)

    def _session_for(self, mask: tuple[int, ...]) -> Any:
        """The session with the preprocessing of the inputs in `mask` left out (cached)."""
        key = mask if any(mask) else ()
        if key not in self._sessions:
            if self._core is None:
                if _has_preprocessing(self._built):
                    raise ChannelcutError(
                        "inputs_pass_through needs a model built in this session; the model "
                        "from load_rknn has its preprocessing built in")
                key = ()
            else:
                names = _input_names(self._core)
                steps = {n: s for n, s in self._steps.items() if not mask[names.index(n)]}
                self._sessions[key] = _session(_with_preprocessing(self._core, steps))
        return self._sessions[key]

    @_reports_errors(None)
    def eval_perf(self, inputs: Sequence[np.ndarray] | None = None, is_print: bool = True,
                  data_format: str | Sequence[str] = "nhwc") -> dict[str, Any] | None:
        """Per-op times (ONNX Runtime's profiler, mean of several runs) and their total, in us."""
        if not self._runtime_ready:
            raise ChannelcutError("the runtime is not initialised; call init_runtime before "
                                  "eval_perf")
        feeds = (_random_feeds(self._built) if inputs is None
                 else _feeds(self._built, inputs, data_format))
        perf = _profile(self._built, feeds)
        if is_print:
            for line in _perf_lines(perf):
                self._log.line(line)
        return perf

    @_reports_errors(FAILED)
    def accuracy_analysis(self, inputs: Sequence[np.ndarray], output_dir: str | Path = "./snapshot",
                          data_format: str | Sequence[str] = "nhwc", **other: Any) -> int:
        """Compare every intermediate tensor of the loaded and the built model on `inputs`.

        Channels the cut removed are dropped from the loaded model's tensors before comparing
        (the cut's channel map). Writes `error_analysis.txt` in `output_dir` and prints one
        summary line per output.
        """
        if self._reference is None or self._built is None:
            raise ChannelcutError("accuracy_analysis compares the loaded and the built model; "
                                  "call load_pytorch or load_onnx, then build, first")
        if other:
            self._log.warn(f"accuracy_analysis: the simulator does not use "
                           f"{', '.join(sorted(other))}; ignored")
        feeds = _feeds(self._built, inputs, data_format)
        rows = _compare_tensors(self._reference, self._built, feeds, self._channel_map)
        path = Path(output_dir) / "error_analysis.txt"
        try:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ChannelcutError(f"{output_dir}: cannot create the output directory "
                                  f"({exc.strerror or exc})") from None
        io.write_atomic(path, "\n".join(_comparison_lines(rows)).encode() + b"\n")
        outputs = set(_output_names(self._built))
        for row in rows:
            if row.name in outputs:
                self._log.line(f"{row.name}: cos sim {row.cosine:.7f}, max abs error "
                               f"{row.max_abs_error:.3g}")
        self._log.info(f"accuracy analysis of {len(rows)} tensors written to {path}")
        return 0

    def release(self) -> int:
        """Drop the models and the runtime; the config stays."""
        self._loaded: onnx.ModelProto | None = None
        self._core: onnx.ModelProto | None = None
        self._reference: onnx.ModelProto | None = None
        self._built: onnx.ModelProto | None = None
        self._steps: dict[str, _Preprocess] = {}
        self._channel_map: dict[str, tuple[int, np.ndarray]] = {}
        self._sessions: dict[tuple[int, ...], Any] = {}
        self._runtime_ready = False
        return 0


# --- argument checks ---------------------------------------------------------------------

def _check_targets(value: str | Sequence[str], what: str) -> None:
    names = [value] if isinstance(value, str) else list(value)
    for name in names:
        if not isinstance(name, str) or name.lower() not in TARGETS:
            raise ChannelcutError(f"{what} {name!r} is not a known platform; the valid ones are "
                                  f"{', '.join(TARGETS)}")


def _check_sizes(sizes: Any) -> list[tuple[int, ...]]:
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


def _per_input_numbers(values: Any, what: str) -> list[list[float]] | None:
    """[[m0, m1, m2], ...] per input; a flat list of numbers applies to every input."""
    if values is None:
        return None
    if isinstance(values, Sequence) and values and all(isinstance(v, Real) for v in values):
        values = [values]
    if isinstance(values, str) or not isinstance(values, Sequence) or not all(
            isinstance(v, Sequence) and v and all(isinstance(x, Real) for x in v)
            for v in values):
        raise ChannelcutError(f"{what} must be one list of numbers per input, for example "
                              "[[123.675, 116.28, 103.53]]")
    return [[float(x) for x in v] for v in values]


def _per_input_orders(value: str | Sequence[str] | None) -> list[list[int]] | None:
    """reorder_channel: '2 1 0' for every input, or one such string per input."""
    if value is None:
        return None
    texts = [value] if isinstance(value, str) else value
    try:
        return [[int(c) for c in text.split()] for text in texts]
    except (AttributeError, ValueError):
        raise ChannelcutError(f"reorder_channel {value!r} must be a string of channel numbers "
                              "such as '2 1 0' (RGB <-> BGR), or one per input") from None


def _preprocess_steps(model: onnx.ModelProto, config: dict[str, Any]) -> dict[str, _Preprocess]:
    """One preprocessing per model input from config's per-input lists (one list fits all)."""
    names = _input_names(model)
    steps = {}
    for key in ("mean_values", "std_values", "reorder_channel"):
        given = config.get(key)
        if given is not None and len(given) not in (1, len(names)):
            raise ChannelcutError(f"{key} has {len(given)} entries, the model has {len(names)} "
                                  f"inputs ({', '.join(names)}); give one per input")
    for index, name in enumerate(names):
        pick = {key: (None if config.get(key) is None else
                      config[key][index if len(config[key]) > 1 else 0])
                for key in ("mean_values", "std_values", "reorder_channel")}
        steps[name] = _Preprocess(mean=pick["mean_values"], std=pick["std_values"],
                                 order=pick["reorder_channel"])
    return steps


def _pass_through_mask(value: Sequence[int] | None, count: int) -> tuple[int, ...]:
    if value is None:
        return (0,) * count
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != count or \
            any(v not in (0, 1) for v in value):
        raise ChannelcutError(f"inputs_pass_through must be a list of {count} values, 0 or 1 "
                              "(1: feed that input without the preprocessing)")
    return tuple(int(v) for v in value)


# --- preprocessing as graph nodes ----------------------------------------------------------

# Names of the nodes and constants we add start with this, so a model read back with
# load_rknn can tell whether its inputs are preprocessed.
PREPROCESS_PREFIX = "rknn_preprocess_"


@dataclass(frozen=True)
class _Preprocess:
    """What happens to one raw input before the model sees it; each step is optional."""

    mean: list[float] | None = None
    std: list[float] | None = None
    order: list[int] | None = None


def _with_preprocessing(model: onnx.ModelProto, steps: dict[str, _Preprocess]) -> onnx.ModelProto:
    """A copy of `model` whose inputs pass through Gather (reorder), Sub (mean), Div (std).

    The graph input keeps its name, shape and type; only what reads it changes. Steps that
    change nothing (mean 0, std 1, order 0 1 2) add no node.
    """
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    new_nodes = []
    for value in _graph_inputs(graph):
        ops = _preprocess_ops(value, steps.get(value.name, _Preprocess()))
        if not ops:
            continue
        current = value.name
        for op_type, constant, attributes in ops:
            stem = f"{PREPROCESS_PREFIX}{value.name}_{op_type.lower()}"
            graph.initializer.append(onnx.numpy_helper.from_array(constant, f"{stem}_constant"))
            new_nodes.append(onnx.helper.make_node(op_type, [current, f"{stem}_constant"],
                                                   [f"{stem}_output"], name=stem, **attributes))
            current = f"{stem}_output"
        _rename_uses(graph, value.name, current)
    # Preprocessing first keeps the node list in topological order.
    nodes = new_nodes + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return result


def _preprocess_ops(value: onnx.ValueInfoProto,
                    step: _Preprocess) -> list[tuple[str, np.ndarray, dict[str, int]]]:
    """(op type, constant, attributes) for each step that changes the input, in order."""
    if step == _Preprocess():
        return []
    dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))
    if len(dims) < 2 or not np.issubdtype(dtype, np.floating):
        raise ChannelcutError(f"mean_values, std_values and reorder_channel need a float input "
                              f"with a channel axis; input {value.name!r} is {dtype} {dims}")
    channels, ops = dims[1], []
    if step.order is not None:
        if sorted(step.order) != list(range(channels)):
            raise ChannelcutError(f"reorder_channel {' '.join(map(str, step.order))} is not an "
                                  f"order of the {channels} channels of input {value.name!r}")
        if step.order != list(range(channels)):
            ops.append(("Gather", np.array(step.order, np.int64), {"axis": 1}))
    broadcast_shape = (channels,) + (1,) * (len(dims) - 2)
    for op_type, values, neutral, what in (("Sub", step.mean, 0.0, "mean_values"),
                                           ("Div", step.std, 1.0, "std_values")):
        if values is None:
            continue
        if len(values) not in (1, channels):
            raise ChannelcutError(f"{what} has {len(values)} values for input {value.name!r}, "
                                  f"which has {channels} channels; give one per channel")
        constant = np.broadcast_to(np.asarray(values, dtype), (channels,)).reshape(broadcast_shape)
        if np.any(constant != neutral):
            ops.append((op_type, np.ascontiguousarray(constant), {}))
    return ops


def _rename_uses(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Make every node that reads `old` (subgraphs included) read `new`."""
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name == old:
                node.input[index] = new
        for attribute in node.attribute:
            for subgraph in [attribute.g] if attribute.HasField("g") else attribute.graphs:
                _rename_uses(subgraph, old, new)


def _has_preprocessing(model: onnx.ModelProto) -> bool:
    return any(node.name.startswith(PREPROCESS_PREFIX) for node in model.graph.node)


# --- the model's interface -----------------------------------------------------------------

def _graph_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """Inputs a caller feeds; initializers listed as inputs (old exporters) are not."""
    initializers = {t.name for t in graph.initializer}
    return [v for v in graph.input if v.name not in initializers]


def _input_names(model: onnx.ModelProto) -> list[str]:
    return [v.name for v in _graph_inputs(model.graph)]


def _output_names(model: onnx.ModelProto) -> list[str]:
    return [v.name for v in model.graph.output]


def _input_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Shapes of the inputs, static once _fix_input_shapes has run."""
    return {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in _graph_inputs(model.graph)}


def _describe_inputs(model: onnx.ModelProto) -> str:
    return ", ".join(f"{name} {shape}" for name, shape in _input_shapes(model).items())


def _fix_input_shapes(model: onnx.ModelProto, sizes: list[tuple[int, ...]] | None) -> None:
    """Give every input a static shape, as RKNN models have: (1, *size), or dynamic dims 1."""
    inputs = _graph_inputs(model.graph)
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


def _extract(model: onnx.ModelProto, inputs: Sequence[str] | None,
             outputs: Sequence[str] | None) -> onnx.ModelProto:
    """The part of the model between the named input and output tensors."""
    known = {v.name for v in model.graph.input} | {o for n in model.graph.node for o in n.output}
    for name in [*(inputs or []), *(outputs or [])]:
        if name not in known:
            raise ChannelcutError(f"load_onnx: {name!r} is not a tensor of the model; check the "
                                  "names given as inputs and outputs")
    input_names = list(inputs) if inputs is not None else _input_names(model)
    output_names = list(outputs) if outputs is not None else _output_names(model)
    try:
        # The extractor copies types from value_info, which it does not infer itself.
        typed = onnx.shape_inference.infer_shapes(model)
        return onnx.utils.Extractor(typed).extract_model(input_names, output_names)
    except Exception as exc:  # noqa: BLE001 - onnx raises several types for a bad cut
        raise ChannelcutError(f"load_onnx: cannot cut the model at inputs {input_names} and "
                              f"outputs {output_names} ({io.error_line(exc)})") from None


# --- the simulator (ONNX Runtime on the CPU) -----------------------------------------------

# eval_perf: timed runs after one warm-up run, whose times (allocations, caches) are dropped.
PERF_RUNS = 10


@dataclass(frozen=True)
class _TensorComparison:
    """One tensor of the loaded model against the same tensor of the built model."""

    name: str
    shape: tuple[int, ...]
    cosine: float
    max_abs_error: float


def _session(model: onnx.ModelProto, profile_prefix: str | None = None,
             optimize: bool = True) -> Any:
    """An ONNX Runtime CPU session; `optimize=False` keeps every intermediate tensor as is."""
    import onnxruntime as ort  # noqa: PLC0415 - heavy import, only the runtime needs it

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: ORT's warnings are not the user's business
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


def _feeds(model: onnx.ModelProto, inputs: Any,
           data_format: str | Sequence[str]) -> dict[str, np.ndarray]:
    """Inputs by name, NCHW and of the model's dtype; one E-worthy error for any mismatch."""
    values = _graph_inputs(model.graph)
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
    feeds = {}
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
        feeds[value.name] = np.ascontiguousarray(array, dtype=dtype)
    return feeds


def _random_feeds(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    from channelcut.verify import random_inputs  # noqa: PLC0415

    return random_inputs(model, {k: tuple(v) for k, v in _input_shapes(model).items()})


def _run(session: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    try:
        return session.run(None, feeds)
    except Exception as exc:  # noqa: BLE001 - ORT's error types share no base class
        raise ChannelcutError(f"the simulator failed to run the model "
                              f"({io.error_line(exc)})") from None


def _profile(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    """Mean kernel time per node over PERF_RUNS runs, from ONNX Runtime's JSON profile."""
    with tempfile.TemporaryDirectory(prefix="channelcut-perf-") as tmp:
        session = _session(model, profile_prefix=str(Path(tmp) / "profile"))
        for _ in range(PERF_RUNS + 1):
            _run(session, feeds)
        events = json.loads(Path(session.end_profiling()).read_text(encoding="utf-8"))
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


def _perf_lines(perf: dict[str, Any]) -> list[str]:
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


def _run_all(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every tensor the model computes, by name, in execution order (no graph optimisation)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    order = list(dict.fromkeys(o for node in graph.node for o in node.output if o))
    present = {o.name for o in graph.output}
    # ORT accepts an output without a type; it takes the one it infers.
    graph.output.extend(onnx.ValueInfoProto(name=n) for n in order if n not in present)
    session = _session(copy, optimize=False)
    names = [o.name for o in session.get_outputs()]
    values = dict(zip(names, _run(session, feeds)))
    return {name: values[name] for name in order + sorted(present - set(order))}


def _compare_tensors(reference: onnx.ModelProto, built: onnx.ModelProto,
                     feeds: dict[str, np.ndarray],
                     channel_map: dict[str, tuple[int, np.ndarray]]) -> list[_TensorComparison]:
    """Cosine and max error of every tensor both models have; cut channels left out."""
    expected, actual = _run_all(reference, feeds), _run_all(built, feeds)
    rows = []
    for name, want in expected.items():
        if name not in actual:
            continue
        if name in channel_map:
            axis, kept = channel_map[name]
            want = np.take(want, kept, axis=axis)
        rows.append(_compare(name, np.asarray(want), np.asarray(actual[name])))
    return rows


def _compare(name: str, want: np.ndarray, got: np.ndarray) -> _TensorComparison:
    if want.shape != got.shape or want.dtype.kind not in "biuf" or got.dtype.kind not in "biuf":
        same = want.shape == got.shape and np.array_equal(want, got)
        return _TensorComparison(name, got.shape, 1.0 if same else math.nan,
                                 0.0 if same else math.nan)
    a, b = want.astype(np.float64).ravel(), got.astype(np.float64).ravel()
    if np.array_equal(a, b, equal_nan=True):
        return _TensorComparison(name, got.shape, 1.0, 0.0)
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    cosine = float(np.dot(a, b) / norms) if norms > 0 else 0.0
    return _TensorComparison(name, got.shape, cosine, float(np.max(np.abs(a - b))))


def _comparison_lines(rows: list[_TensorComparison]) -> list[str]:
    row = "{:<56}{:<14}{:<16}{}".format
    return [row("tensor", "cos sim", "max abs error", "shape (built model)")] + [
        row(r.name, f"{r.cosine:.7f}", f"{r.max_abs_error:.3g}", list(r.shape)) for r in rows]
