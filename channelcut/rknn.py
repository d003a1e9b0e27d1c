"""RKNN-Toolkit style facade: a user's conversion script runs with one import changed.

    from channelcut.rknn import RKNN

The call sequence is RKNN-Toolkit's (config, load_pytorch / load_onnx, build, export_rknn,
init_runtime, inference, release); the model runs in ONNX Runtime on the CPU (the simulator),
since no Rockchip NPU is reachable here, and "rknn" files are ONNX models.

Conventions, RKNN-Toolkit's: methods return 0 on success and -1 on failure after one `E` line
that says what to do; `inference` returns the list of outputs, or None after an `E` line;
`eval_perf` returns its result dict, or None. Log lines start with `I ` (only with
verbose=True), `W ` or `E ` (always) and go to stdout, and to `verbose_file` when given.

_Preprocessing (config's mean_values, std_values, reorder_channel) becomes nodes in front of
each model input, so `inference` takes raw pixels as RKNN does. Order: the channels are first
reordered (out[c] = in[order[c]]), then the mean is subtracted and the result divided by std;
mean and std are given in the order of the model's channels, i.e. after the reorder.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
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
        self._preprocess_config = {
            "mean_values": _per_input_numbers(mean_values, "mean_values"),
            "std_values": _per_input_numbers(std_values, "std_values"),
            "reorder_channel": _per_input_orders(reorder_channel),
        }
        if any(0 in values for values in self._preprocess_config["std_values"] or []):
            raise ChannelcutError("std_values must not contain 0; the input is divided by them")
        self._pruning = bool(model_pruning)
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

            result = cut(self._loaded, input_shapes=_input_shapes(self._loaded))
            core, channel_map = result.model, result.channel_map
            self._log.info("Pruning: const change detail")
            for line in const_change_lines(result.report) + summary_lines(result.report):
                self._log.info(line)
        self._steps, self._core, self._channel_map = steps, core, channel_map
        self._reference = _with_preprocessing(self._loaded, steps)
        self._built = _with_preprocessing(core, steps)
        self._sessions = {}
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
        """Read back a file written by export_rknn (an ONNX model), ready for init__"""
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
        return _run(self._session_for(_pass_through_mask(inputs_pass_through,
                                                                 len(feeds))), feeds)

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
                self._log.line(_comparison_lines([row])[1])
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
    """One _Preprocess per model input from config's per-input lists (one list fits all)."""
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

