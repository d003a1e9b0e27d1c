"""RKNN-Toolkit style facade: a user's conversion script runs with one import changed.

    from channelcut.rknn import RKNN

The call sequence is RKNN-Toolkit's (config, load_pytorch / load_onnx, build, export_rknn,
init_runtime, inference, release); the model runs in ONNX Runtime on the CPU (the simulator,
channelcut.simulator), since no Rockchip NPU is reachable here, and "rknn" files are ONNX
models. config's mean_values, std_values and reorder_channel become nodes in front of each
model input (channelcut.preprocess), so `inference` takes raw pixels as RKNN does.

Conventions, RKNN-Toolkit's: methods return 0 on success and -1 on failure after one `E` line
that says what to do; `inference` returns the list of outputs, or None after an `E` line;
`eval_perf` returns its result dict, or None. Log lines start with `I ` (only with
verbose=True), `W ` or `E ` (always) and go to stdout, and to `verbose_file` when given.

`config(model_pruning=...)`: True removes only zero or unread channels, as RKNN-Toolkit's
model_pruning does (the seed's table), and logs what the same cut aligned to the NPU's channel
multiple would give; "aligned" makes that aligned cut; "full" also folds constant channels
into their readers, as the NPU runs them (channelcut.targets: `rknn` for every Rockchip
platform), choosing by `pruning_objective` (default: the target's). All run the same analysis
(`channelcut.api.cut`); the mode only changes which rewrites it may make.
"""

from __future__ import annotations

import functools
from dataclasses import asdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import onnx

from channelcut import io, simulator
from channelcut.errors import ChannelcutError
from channelcut.preprocess import (Preprocess, has_preprocessing, preprocess_config,
                                   preprocess_steps, preprocessed, with_preprocessing)

TOOLKIT1_TARGETS = ("rk1806", "rk1808", "rk3399pro", "rv1109", "rv1126")
TOOLKIT2_TARGETS = ("rk3562", "rk3566", "rk3568", "rk3576", "rk3588", "rv1103", "rv1106")
TARGETS = TOOLKIT1_TARGETS + TOOLKIT2_TARGETS
# channelcut.targets entry for each platform: every Rockchip NPU is compiled by RKNN-Toolkit,
# whose channel alignment and placement rules the `rknn` target encodes.
CUT_TARGETS = {platform: "rknn" for platform in TARGETS}
DEFAULT_CUT_TARGET = "rknn"  # no target_platform: RKNN-Toolkit2 then builds for rk3566
FAILED = -1

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
        self._pruning: str | None = None  # None, "zero", "aligned" or "full"
        self._pruning_objective: str | None = None  # None: the target's
        self._cut_target = DEFAULT_CUT_TARGET
        self.release()

    # --- configuration and loading -------------------------------------------------------

    @_reports_errors(FAILED)
    def config(self, mean_values: Any = None, std_values: Any = None,
               reorder_channel: str | Sequence[str] | None = None,
               target_platform: str | Sequence[str] | None = None,
               model_pruning: bool | str = False, pruning_objective: str | None = None,
               **other: Any) -> int:
        """Set preprocessing, the target platform(s) and pruning; used by the next `build`.

        model_pruning: False, True (zero or unread channels only, RKNN-Toolkit's), "aligned"
        (the same, keeping a multiple of the NPU's channel block) or "full" (also folds
        constant channels where the NPU runs the fold); pruning_objective ("flops", "params"
        or "latency"; default the target's) decides which folds the full cut makes.
        """
        cut_target = DEFAULT_CUT_TARGET
        if target_platform is not None:
            _check_targets(target_platform, "target_platform")
            first = target_platform if isinstance(target_platform, str) else target_platform[0]
            cut_target = CUT_TARGETS[first.lower()]
        preprocess = preprocess_config(mean_values, std_values, reorder_channel)
        pruning = _pruning_mode(model_pruning)
        if pruning_objective is not None:
            _check_objective(pruning_objective)
        # Only a config that is valid as a whole replaces the previous one.
        self._preprocess_config, self._pruning = preprocess, pruning
        self._pruning_objective, self._cut_target = pruning_objective, cut_target
        self._ignored("config", other)
        return 0

    @_reports_errors(FAILED)
    def load_pytorch(self, model: Any, input_size_list: Sequence[Sequence[int]]) -> int:
        """Load a TorchScript file (torch.jit.save) or an nn.Module; sizes without the batch."""
        from channelcut import pytorch  # noqa: PLC0415 - needs torch, an optional extra

        self.release()  # a load that fails leaves nothing loaded, not the previous model
        shapes = [(1, *size) for size in simulator.check_sizes(input_size_list)]
        self._set_loaded(pytorch.to_onnx(model, shapes), None)
        return 0

    @_reports_errors(FAILED)
    def load_onnx(self, model: str | Path | onnx.ModelProto,
                  inputs: Sequence[str] | None = None,
                  input_size_list: Sequence[Sequence[int]] | None = None,
                  outputs: Sequence[str] | None = None) -> int:
        """Load an ONNX model; `inputs`/`outputs` name tensors to cut the graph at."""
        self.release()  # a load that fails leaves nothing loaded, not the previous model
        proto = io.load_model(model)
        if inputs is not None or outputs is not None:
            proto = _extract(proto, inputs, outputs)
        sizes = None if input_size_list is None else simulator.check_sizes(input_size_list)
        self._set_loaded(proto, sizes)
        return 0

    def _set_loaded(self, model: onnx.ModelProto, sizes: list[tuple[int, ...]] | None) -> None:
        self.release()
        simulator.fix_input_shapes(model, sizes)
        self._loaded = model
        self._log.info(f"loaded a model with inputs {simulator.describe_inputs(model)}")

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
        # the dataset is what pruning verifies on; nothing else here reads it
        unread_dataset = dataset is not None and self._pruning is None
        ignored = [name for name, used in (("dataset", unread_dataset),
                                           ("pre_compile", pre_compile)) if used]
        if ignored or other:
            self._log.warn(f"build: the simulator does not use "
                           f"{', '.join(ignored + sorted(other))}; ignored")
        steps = preprocess_steps(self._loaded, self._preprocess_config)
        core, channel_map = self._loaded, {}
        self._report = None
        if self._pruning is not None:
            samples = None if dataset is None else self._dataset(dataset, steps)
            core, channel_map = self._prune(self._loaded, samples)
        self._steps, self._core, self._channel_map = steps, core, channel_map
        self._reference = with_preprocessing(self._loaded, steps)
        self._built = with_preprocessing(core, steps)
        self._sessions, self._runtime_ready = {}, False  # a new model needs init_runtime again
        return 0

    def _dataset(self, dataset: str | Path, steps: dict[str, Preprocess]
                 ) -> list[dict[str, np.ndarray]] | None:
        """The samples an RKNN dataset file lists (one line per sample, one path per model
        input, relative to the file's folder; .npy arrays as `inference` takes them, or
        images when Pillow is installed), preprocessed as the model's inputs see them."""
        path = Path(dataset)
        try:
            lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
        except OSError as exc:
            raise ChannelcutError(f"dataset {path}: cannot be read ({exc.strerror or exc}); "
                                  "give a text file with one sample per line") from None
        samples = []
        for entries in lines:
            arrays = [self._sample(path.parent / entry) for entry in entries]
            if any(a is None for a in arrays):
                return None
            raw = simulator.feeds(self._loaded, arrays, "nhwc")
            samples.append(preprocessed(self._loaded, steps, raw))
        if not samples:
            raise ChannelcutError(f"dataset {path}: lists no samples; give one path per line")
        self._log.info(f"Pruning: verifying on the {len(samples)} samples of {path}")
        return samples

    def _sample(self, path: Path) -> np.ndarray | None:
        """One dataset entry as an array; None (after a `W` line) when it cannot be read."""
        try:
            if path.suffix.lower() == ".npy":
                return np.load(path, allow_pickle=False)
            from PIL import Image  # noqa: PLC0415 - optional: only for image datasets

            with Image.open(path) as image:
                return np.asarray(image.convert("RGB"))
        except ImportError:
            self._log.warn(f"dataset entry {path}: reading images needs Pillow; verifying "
                           "pruning on random inputs instead")
        except (OSError, ValueError) as exc:
            raise ChannelcutError(f"dataset entry {path}: cannot be read "
                                  f"({io.error_line(exc)}); list .npy files or images") from None
        return None

    def _prune(self, model: onnx.ModelProto, samples: list[dict[str, np.ndarray]] | None = None
               ) -> tuple[onnx.ModelProto, dict[str, tuple[int, np.ndarray]]]:
        """The cut model and its channel map; logs the const change table (and the folds).
        `samples`: the dataset's inputs to verify on (default seeded random ones)."""
        from channelcut.api import cut  # noqa: PLC0415 - keeps `import rknn` light
        from channelcut.report import const_change_lines, summary_lines  # noqa: PLC0415

        shapes = simulator.input_shapes(model)
        target = self._cut_target
        if self._pruning == "full":
            result = cut(model, input_shapes=shapes, fold=True, target=target,
                         objective=self._pruning_objective, verify_inputs=samples)
        elif self._pruning == "aligned":  # zero or unread channels, the NPU's multiple kept
            result = cut(model, input_shapes=shapes, fold=False, target=target,
                         align="target", verify_inputs=samples)
        else:  # RKNN-Toolkit's model_pruning: only zero or unread channels go
            result = cut(model, input_shapes=shapes, fold=False, target=target,
                         verify_inputs=samples)
        self._report = result.report
        self._log.info("Pruning: const change detail")
        for line in const_change_lines(result.report) + summary_lines(result.report):
            self._log.info(line)
        if result.report.aligned is not None:
            self._log.info("Pruning: config(model_pruning=\"aligned\") makes the aligned cut")
        for site in result.report.sites:
            # The cost fields under their report names (the --report-json keys).
            costs = {k: v for k, v in asdict(site).items() if k not in ("node", "op_type", "kind")}
            self._log.info(f"Pruning: {site.kind} at {site.node} ({site.op_type}): "
                           + ", ".join(f"{k} {v}" for k, v in costs.items()))
        return result.model, result.channel_map

    @_reports_errors(FAILED)
    def export_onnx(self, export_path: str | Path) -> int:
        """Write the built model as ONNX (and, with verbose=True, the pruning's HTML report)."""
        io.save_model(self._require_built("export_onnx"), export_path)
        self._write_report(export_path)
        return 0

    @_reports_errors(FAILED)
    def export_rknn(self, export_path: str | Path) -> int:
        """Write the built model, as ONNX, to the path a script gives for its .rknn file (and,
        with verbose=True, the pruning's HTML report next to it)."""
        io.save_model(self._require_built("export_rknn"), export_path)
        self._write_report(export_path)
        self._log.warn(f"{export_path} is an ONNX model, not Rockchip's proprietary RKNN binary; "
                       "it loads in ONNX Runtime or in RKNN-Toolkit's load_onnx")
        return 0

    @_reports_errors(FAILED)
    def load_rknn(self, path: str | Path) -> int:
        """Read back a file written by export_rknn (an ONNX model), ready for init_runtime."""
        self.release()  # a load that fails leaves nothing loaded, not the previous model
        try:
            model = io.load_model(path)
        except ChannelcutError as exc:
            raise ChannelcutError(f"{exc}; load_rknn reads the ONNX files that channelcut's "
                                  "export_rknn writes, not Rockchip's RKNN binaries") from None
        simulator.fix_input_shapes(model, None)
        self._built = model
        return 0

    def _write_report(self, export_path: str | Path) -> None:
        """With verbose=True and a pruned build: its HTML report as <export>.report.html."""
        if not self._log.verbose or self._report is None:
            return
        from channelcut.htmlreport import html_report  # noqa: PLC0415

        path = report_path(export_path)
        io.write_atomic(path, html_report(self._report, title=str(export_path)).encode())
        self._log.info(f"Pruning: report written to {path}")

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
        self._ignored("init_runtime", other)
        self._sessions = {(): simulator.session(model)}
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
        self._require_runtime("inference")
        self._ignored("inference", other)
        feeds = simulator.feeds(self._built, inputs, data_format)
        mask = simulator.pass_through_mask(inputs_pass_through, len(feeds))
        return simulator.run(self._session_for(mask), feeds)

    def _session_for(self, mask: tuple[int, ...]) -> Any:
        """The session with the preprocessing of the inputs in `mask` left out (cached)."""
        key = mask if any(mask) else ()
        if key not in self._sessions:
            if self._core is None:
                if has_preprocessing(self._built):
                    raise ChannelcutError(
                        "inputs_pass_through needs a model built in this session; the model "
                        "from load_rknn has its preprocessing built in")
                key = ()
            else:
                names = simulator.input_names(self._core)
                steps = {n: s for n, s in self._steps.items() if not mask[names.index(n)]}
                self._sessions[key] = simulator.session(with_preprocessing(self._core, steps))
        return self._sessions[key]

    @_reports_errors(None)
    def eval_perf(self, inputs: Sequence[np.ndarray] | None = None, is_print: bool = True,
                  data_format: str | Sequence[str] = "nhwc") -> dict[str, Any] | None:
        """Per-op times (ONNX Runtime's profiler, mean of several runs) and their total, in us."""
        self._require_runtime("eval_perf")
        feeds = (simulator.random_feeds(self._built) if inputs is None
                 else simulator.feeds(self._built, inputs, data_format))
        perf = simulator.profile(self._built, feeds)
        if is_print:
            for line in simulator.perf_lines(perf):
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
        self._ignored("accuracy_analysis", other)
        feeds = simulator.feeds(self._built, inputs, data_format)
        rows = simulator.compare_tensors(self._reference, self._built, feeds, self._channel_map)
        path = Path(output_dir) / "error_analysis.txt"
        try:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ChannelcutError(f"{output_dir}: cannot create the output directory "
                                  f"({exc.strerror or exc})") from None
        io.write_atomic(path, "\n".join(simulator.comparison_lines(rows)).encode() + b"\n")
        outputs = set(simulator.output_names(self._built))
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
        self._steps: dict[str, Preprocess] = {}
        self._channel_map: dict[str, tuple[int, np.ndarray]] = {}
        self._sessions: dict[tuple[int, ...], Any] = {}
        self._runtime_ready = False
        self._report: Any = None  # the pruning's channelcut.report.Report
        return 0

    def _require_runtime(self, method: str) -> None:
        if not self._runtime_ready:
            raise ChannelcutError(f"the runtime is not initialised; call init_runtime before "
                                  f"{method}")

    def _ignored(self, method: str, options: dict[str, Any]) -> None:
        """One `W` line naming the options the simulator does not use."""
        if options:
            self._log.warn(f"{method}: the simulator does not use "
                           f"{', '.join(sorted(options))}; ignored")


def report_path(export_path: str | Path) -> Path:
    """Where export_rknn / export_onnx put the HTML report: `model.rknn` -> `model.report.html`."""
    return Path(export_path).with_suffix(".report.html")


# --- argument checks ---------------------------------------------------------------------

def _check_targets(value: str | Sequence[str], what: str) -> None:
    names = [value] if isinstance(value, str) else list(value)
    for name in names:
        if not isinstance(name, str) or name.lower() not in TARGETS:
            raise ChannelcutError(f"{what} {name!r} is not a known platform; the valid ones are "
                                  f"{', '.join(TARGETS)}")


def _pruning_mode(value: Any) -> str | None:
    """model_pruning as the cut's mode: None (no pruning), "zero" or "full"."""
    # `is` for the bools: 0, 1 and 1.0 compare equal to them but are not what RKNN takes.
    if value is True or value is False:
        return "zero" if value else None
    if isinstance(value, str) and value.lower() in ("full", "aligned"):
        return value.lower()
    raise ChannelcutError(f"model_pruning {value!r} is not a pruning mode; use True (zero "
                          "channels only, as RKNN-Toolkit), \"aligned\" (the same, aligned "
                          "to the NPU's channel block), \"full\" (also fold constant "
                          "channels) or False")


def _check_objective(value: Any) -> None:
    from channelcut.solve import OBJECTIVES  # noqa: PLC0415 - keeps `import rknn` light

    if value not in OBJECTIVES:
        raise ChannelcutError(f"pruning_objective {value!r} is not known; use one of "
                              f"{', '.join(OBJECTIVES)}")


def _extract(model: onnx.ModelProto, inputs: Sequence[str] | None,
             outputs: Sequence[str] | None) -> onnx.ModelProto:
    """The part of the model between the named input and output tensors."""
    known = {v.name for v in model.graph.input} | {o for n in model.graph.node for o in n.output}
    for name in [*(inputs or []), *(outputs or [])]:
        if name not in known:
            raise ChannelcutError(f"load_onnx: {name!r} is not a tensor of the model; check the "
                                  "names given as inputs and outputs")
    input_names = list(inputs) if inputs is not None else simulator.input_names(model)
    output_names = list(outputs) if outputs is not None else simulator.output_names(model)
    try:
        # The extractor copies types from value_info, which it does not infer itself.
        typed = onnx.shape_inference.infer_shapes(model)
        return onnx.utils.Extractor(typed).extract_model(input_names, output_names)
    except Exception as exc:  # noqa: BLE001 - onnx raises several types for a bad cut
        raise ChannelcutError(f"load_onnx: cannot cut the model at inputs {input_names} and "
                              f"outputs {output_names} ({io.error_line(exc)})") from None
