"""RKNN-Toolkit style facade: a user's conversion script runs with one import changed.

    from channelcut.rknn import RKNN

The call sequence is RKNN-Toolkit's (config, load_pytorch / load_onnx, build, export_rknn,
init_runtime, inference, release). Two backends: with RKNN-Toolkit2 importable, channelcut
cuts the model and the toolkit compiles, exports and runs it (channelcut.rknn.toolkit);
otherwise, or with backend="onnxruntime", the model runs in ONNX Runtime on the CPU (the
simulator, channelcut.rknn.simulator) and "rknn" files are ONNX models. config's mean_values,
std_values and reorder_channel become nodes in front of each model input
(channelcut.rknn.preprocess), so `inference` takes raw pixels as RKNN does.
build(do_quantization=True, dataset=...) quantizes the cut model (channelcut.rknn.dataset,
channelcut.rknn.quantize); accuracy_analysis compares it with the float original layer by
layer (channelcut.rknn.accuracy).

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

from channelcut import io
from channelcut.errors import ChannelcutError
from channelcut.rknn import accuracy, simulator
from channelcut.rknn.dataset import MissingDecoder, load_input, read_dataset
from channelcut.rknn.preprocess import (Preprocess, has_preprocessing, normalised_input_ranges,
                                        preprocess_config, preprocess_steps, preprocessed,
                                        with_preprocessing)
from channelcut.rknn.quantize import Quantization, ort_options, quantization_config
from channelcut.rknn.quantize import quantize as quantize_model
from channelcut.rknn.toolkit import Toolkit, choose_backend, split_preprocessing
from channelcut.targets import TARGETS as CUT_TARGET_TABLE
from channelcut.verify import graph_inputs

TOOLKIT1_TARGETS = ("rk1806", "rk1808", "rk3399pro", "rv1109", "rv1126")
TOOLKIT2_TARGETS = ("rk3562", "rk3566", "rk3568", "rk3576", "rk3588", "rv1103", "rv1106",
                    "rv1103b", "rv1106b", "rv1126b", "rk2118")
# RKNN-Toolkit2 needs a platform; the facade's when none of its own is given
TOOLKIT2_DEFAULT = "rk3588"
TARGETS = TOOLKIT1_TARGETS + TOOLKIT2_TARGETS
# channelcut.targets entry for each platform: every Rockchip NPU is compiled by RKNN-Toolkit,
# whose channel alignment and placement rules the `rknn` target encodes.
CUT_TARGETS = {platform: "rknn" for platform in TARGETS}
DEFAULT_CUT_TARGET = "rknn"  # no target_platform: RKNN-Toolkit2 then builds for rk3566
FAILED = -1
# Toolkit1's 8-bit spellings, as RKNN-Toolkit2 names its 8-bit scheme
TOOLKIT2_DTYPES = {"asymmetric_affine-u8": "w8a8", "asymmetric_quantized-8": "w8a8",
                   "dynamic_fixed_point-i8": "w8a8"}
HYBRID = ("hybrid quantization (hybrid_quantization_step1/2) is not available in channelcut; "
          "build(do_quantization=True, dataset=...) quantizes every layer")

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
                if self._unavailable is not None:
                    raise ChannelcutError(self._unavailable)
                return method(self, *args, **kwargs)
            except ChannelcutError as exc:
                self._log.error(str(exc))
                return on_error
        return wrapper
    return decorate


class RKNN:
    """One conversion: configure, load a model, build (and prune), export, run, release.

    backend: None picks RKNN-Toolkit2 when `rknn.api` imports, else the ONNX Runtime
    simulator; "onnxruntime" or "rknn-toolkit2" forces one.
    """

    # init_runtime's core_mask values, RKNN-Toolkit2's
    NPU_CORE_AUTO, NPU_CORE_0, NPU_CORE_1, NPU_CORE_2 = 0, 1, 2, 4
    NPU_CORE_0_1, NPU_CORE_0_1_2, NPU_CORE_ALL = 3, 7, 0xFFFF

    def __init__(self, verbose: bool = False, verbose_file: str | Path | None = None,
                 backend: str | None = None) -> None:
        self._log = _Log(verbose, verbose_file)
        self._preprocess_config: dict[str, Any] = {}
        self._pruning: str | None = None  # None, "zero", "aligned" or "full"
        self._pruning_objective: str | None = None  # None: the target's
        self._cut_target = DEFAULT_CUT_TARGET
        self._quantization = Quantization()
        self._toolkit_config: dict[str, Any] = {}
        self._unavailable: str | None = None  # the E line every call repeats
        self._toolkit: Toolkit | None = None
        try:
            self.backend = choose_backend(backend)
        except ChannelcutError as exc:
            self.backend, self._unavailable = "none", str(exc)
            self._log.error(self._unavailable)
        if self.backend == "rknn-toolkit2":
            self._toolkit = Toolkit(verbose, verbose_file)
        self.release()

    # --- configuration and loading -------------------------------------------------------

    @_reports_errors(FAILED)
    def config(self, mean_values: Any = None, std_values: Any = None,
               reorder_channel: str | Sequence[str] | None = None,
               target_platform: str | Sequence[str] | None = None,
               model_pruning: bool | str = False, pruning_objective: str | None = None,
               quantized_dtype: str | None = None, quantized_algorithm: str | None = None,
               quantized_method: str | None = None, optimization_level: int | None = None,
               **other: Any) -> int:
        """Set preprocessing, the target platform(s) and pruning; used by the next `build`.

        model_pruning: False, True (zero or unread channels only, RKNN-Toolkit's), "aligned"
        (the same, keeping a multiple of the NPU's channel block) or "full" (also folds
        constant channels where the NPU runs the fold); pruning_objective ("flops", "params"
        or "latency"; default the target's) decides which folds the full cut makes. The
        quantization options (RKNN's names, both toolkits' spellings) are used by
        build(do_quantization=True); channelcut.rknn.quantize says how each maps onto ONNX
        Runtime's quantizer.
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
        if self._toolkit is None:
            quantization = quantization_config(quantized_dtype, quantized_algorithm,
                                               quantized_method, optimization_level)
        else:  # the toolkit checks its own options; Toolkit1's 8-bit spellings are its w8a8
            quantization = Quantization()
            quantized_dtype = TOOLKIT2_DTYPES.get(str(quantized_dtype).lower(), quantized_dtype)
        # Only a config that is valid as a whole replaces the previous one.
        self._preprocess_config, self._pruning = preprocess, pruning
        self._pruning_objective, self._cut_target = pruning_objective, cut_target
        self._quantization = quantization
        if self._toolkit is not None:  # the toolkit checks (and uses) what is its own
            given = {"target_platform": target_platform, "quantized_dtype": quantized_dtype,
                     "quantized_algorithm": quantized_algorithm,
                     "quantized_method": quantized_method,
                     "optimization_level": optimization_level}
            self._toolkit_config = {k: v for k, v in given.items() if v is not None} | other
        else:
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
    def build(self, do_quantization: bool | None = None, dataset: str | Path | None = None,
              rknn_batch_size: int | None = None, auto_hybrid: bool = False,
              pre_compile: bool = False, **other: Any) -> int:
        """Add the preprocessing, with model_pruning cut the dead channels out, then quantize.

        do_quantization None (RKNN's default is True, which needs a dataset) quantizes when a
        dataset is given. `dataset` is RKNN's dataset.txt (channelcut.rknn.dataset); the
        calibrated model is the cut one.
        """
        if self._loaded is None:
            raise ChannelcutError("no model loaded; call load_pytorch or load_onnx before build")
        quantize = dataset is not None if do_quantization is None else bool(do_quantization)
        if quantize and dataset is None:
            raise ChannelcutError("build(do_quantization=True) needs dataset='dataset.txt' (one "
                                  "sample per line); or build(do_quantization=False)")
        steps = preprocess_steps(self._loaded, self._preprocess_config)
        samples = self._dataset(dataset, steps, required=quantize)  # errors before any work
        core, channel_map = self._loaded, {}
        self._report = None
        if self._pruning is not None:
            core, channel_map = self._prune(self._loaded, samples, quantize)
        if self._toolkit is not None:
            return self._toolkit_build(core, channel_map, steps, quantize, dataset,
                                       rknn_batch_size, auto_hybrid, pre_compile, other)
        ignored = [name for name, used in (("pre_compile", pre_compile),
                                           ("auto_hybrid", auto_hybrid),
                                           # Toolkit1's default is -1
                                           ("rknn_batch_size",
                                            rknn_batch_size not in (None, 1, -1)),
                                           # what quantization and pruning read
                                           ("dataset", dataset is not None and not quantize
                                            and self._pruning is None))
                   if used]
        if ignored or other:
            self._log.warn(f"build: the simulator does not use "
                           f"{', '.join(ignored + sorted(other))}; ignored")
        float_core = core
        if quantize:
            assert samples is not None  # read with required=True
            core = quantize_model(core, samples, self._quantization)
            options = ort_options(self._quantization)
            self._log.info(f"quantized {self._quantization.dtype} on {len(samples)} samples: "
                           f"{options['calibrate_method']} calibration, "
                           f"{'per channel' if options['per_channel'] else 'per layer'}, QDQ")
        self._steps, self._core, self._channel_map = steps, core, channel_map
        self._reference = with_preprocessing(self._loaded, steps)
        self._float_built = with_preprocessing(float_core, steps)
        self._built = with_preprocessing(core, steps)
        self._sessions, self._runtime_ready = {}, False  # a new model needs init_runtime again
        return 0

    def _toolkit_build(self, core: onnx.ModelProto, channel_map: dict[str, Any],
                       steps: dict[str, Preprocess], quantize: bool, dataset: Any,
                       rknn_batch_size: int | None, auto_hybrid: bool, pre_compile: bool,
                       other: dict[str, Any]) -> int:
        """RKNN-Toolkit2's config, load_onnx and build on the cut model."""
        assert self._toolkit is not None
        if pre_compile or other:
            self._log.warn("build: RKNN-Toolkit2 does not take "
                           f"{', '.join((['pre_compile'] if pre_compile else []) + sorted(other))}"
                           "; ignored")
        orders, preprocess = split_preprocessing(steps)
        config = dict(self._toolkit_config) | preprocess
        unknown = sorted(set(config) - self._toolkit.config_names())
        if unknown:  # Toolkit1's options (batch_size, epochs, ...) that Toolkit2 dropped
            self._log.warn(f"config: RKNN-Toolkit2 does not take {', '.join(unknown)}; ignored")
            config = {k: v for k, v in config.items() if k not in unknown}
        platform = config.pop("target_platform", None)
        platform = platform if isinstance(platform, str) or platform is None else platform[0]
        if platform is not None and platform.lower() in TOOLKIT1_TARGETS:
            self._log.warn(f"target_platform {platform} is an RKNN-Toolkit1 platform, which "
                           f"RKNN-Toolkit2 does not build for; building for {TOOLKIT2_DEFAULT}")
        config["target_platform"] = (platform.lower() if platform is not None and
                                     platform.lower() in TOOLKIT2_TARGETS else TOOLKIT2_DEFAULT)
        build_args = {"do_quantization": quantize, "auto_hybrid": auto_hybrid,
                      "rknn_batch_size": None if rknn_batch_size == -1 else rknn_batch_size}
        if quantize:
            build_args["dataset"] = str(dataset)
        ret = self._toolkit.build(with_preprocessing(core, orders), config, build_args)
        if ret == 0:  # export_onnx writes the cut float model the toolkit compiled
            self._steps, self._core, self._channel_map = steps, core, channel_map
            self._reference = with_preprocessing(self._loaded, steps)
            self._float_built = self._built = with_preprocessing(core, steps)
        return ret

    def _dataset(self, dataset: str | Path | None, steps: dict[str, Preprocess],
                 required: bool) -> list[dict[str, np.ndarray]] | None:
        """The dataset's samples as the model's own inputs see them (preprocessed): what
        quantization calibrates on and pruning verifies on. None without a dataset, or (after
        a `W` line) when only pruning reads it and its images cannot be decoded here."""
        if dataset is None or not (required or self._pruning is not None):
            return None
        try:
            raw = read_dataset(dataset, self._loaded)
        except MissingDecoder as exc:
            if required:
                raise
            self._log.warn(f"{exc}; verifying pruning on random inputs instead")
            return None
        samples = [preprocessed(self._loaded, steps, simulator.feeds(self._loaded, arrays,
                                                                     "nhwc"))
                   for arrays in raw]
        if self._pruning is not None:
            self._log.info(f"Pruning: verifying on the {len(samples)} samples of {dataset}")
        return samples

    def _prune(self, model: onnx.ModelProto, samples: list[dict[str, np.ndarray]] | None = None,
               quantize: bool = False
               ) -> tuple[onnx.ModelProto, dict[str, tuple[int, np.ndarray]]]:
        """The cut model and its channel map; logs the const change table (and the folds).
        `samples`: the dataset's inputs to verify on (default seeded random ones); `quantize`:
        cut for the int8 build (the target's "-int8" entry, where there is one)."""
        from channelcut.api import cut  # noqa: PLC0415 - keeps `import rknn` light
        from channelcut.report import (const_change_lines, range_lines,  # noqa: PLC0415
                                       summary_lines)

        shapes = simulator.input_shapes(model)
        target = self._cut_target
        if quantize and f"{target}-int8" in CUT_TARGET_TABLE:  # int8's layout: 16 a block
            target = f"{target}-int8"
        # raw uint8 pixels through mean/std: the model's inputs are bounded (the cut proves
        # more channels dead by their range)
        ranges = normalised_input_ranges(model, preprocess_steps(model, self._preprocess_config))
        # the toolkit compiles initializers as weights, also those an old export lists as inputs
        common = dict(input_shapes=shapes, target=target, verify_inputs=samples,
                      input_ranges=ranges, constant_initializers=True)
        if self._pruning == "full":
            result = cut(model, fold=True, objective=self._pruning_objective, **common)
        elif self._pruning == "aligned":  # zero or unread channels, the NPU's multiple kept
            result = cut(model, fold=False, align="target", **common)
        else:  # RKNN-Toolkit's model_pruning: only zero or unread channels go
            result = cut(model, fold=False, **common)
        self._report = result.report
        self._log.info("Pruning: const change detail")
        for line in (const_change_lines(result.report) + summary_lines(result.report)
                     + range_lines(result.report)):
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
        """Write the built model as ONNX (QDQ after a quantized build on the simulator; with
        verbose=True also the pruning's HTML report)."""
        io.save_model(self._require_built("export_onnx"), export_path)
        self._write_report(export_path)
        return 0

    @_reports_errors(FAILED)
    def export_rknn(self, export_path: str | Path, **other: Any) -> int:
        """Write the .rknn file: RKNN-Toolkit2's, or on the simulator the built model as ONNX
        (and, with verbose=True, the pruning's HTML report next to it)."""
        if self._toolkit is not None:
            ret = self._toolkit.call("export_rknn", str(export_path), **other)
            if ret == 0:
                self._write_report(export_path)
            return ret
        io.save_model(self._require_built("export_rknn"), export_path)
        self._write_report(export_path)
        self._log.warn(f"{export_path} is an ONNX model, not Rockchip's proprietary RKNN binary; "
                       "it loads in ONNX Runtime or in RKNN-Toolkit's load_onnx")
        self._ignored("export_rknn", other)
        return 0

    @_reports_errors(FAILED)
    def load_rknn(self, path: str | Path) -> int:
        """Read back a file written by export_rknn, ready for init_runtime."""
        self.release()  # a load that fails leaves nothing loaded, not the previous model
        if self._toolkit is not None:
            return self._toolkit.load_rknn(path)
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
                     perf_debug: bool = False, eval_mem: bool = False, async_mode: bool = False,
                     core_mask: int = NPU_CORE_AUTO, **other: Any) -> int:
        """Start the runtime: the toolkit's (simulator or board), or ONNX Runtime's simulator.

        On ONNX Runtime an NPU target falls back to the simulator with a `W` line; perf_debug,
        eval_mem, async_mode and core_mask are the board's and change nothing there.
        """
        if self._toolkit is not None:
            if target is not None and target.lower() in TOOLKIT1_TARGETS:
                self._log.warn(f"target {target}: an RKNN-Toolkit1 platform, which RKNN-Toolkit2 "
                               "does not run; using RKNN-Toolkit2's simulator instead")
                target, device_id = None, None
            return self._toolkit.call("init_runtime", target=target, device_id=device_id,
                                      perf_debug=perf_debug, eval_mem=eval_mem,
                                      async_mode=async_mode, core_mask=core_mask, **other)
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
    def inference(self, inputs: Sequence[np.ndarray],
                  data_format: str | Sequence[str] | None = None,
                  inputs_pass_through: Sequence[int] | None = None,
                  **other: Any) -> list[np.ndarray] | None:
        """Run the built model on raw inputs (4-D ones NHWC unless data_format says 'nchw').

        data_format None is 'nhwc' (with RKNN-Toolkit2's `W` line).
        `inputs_pass_through[i] = 1` feeds input i to the model without the preprocessing.
        Returns the outputs, or None after an `E` line.
        """
        if self._toolkit is not None:
            return self._toolkit.call("inference", inputs=inputs, data_format=data_format,
                                      inputs_pass_through=inputs_pass_through, **other)
        self._require_runtime("inference")
        if data_format is None:
            data_format = "nhwc"
            if any(len(shape) == 4 for shape in simulator.input_shapes(self._built).values()):
                self._log.warn("inference: data_format is not set; using 'nhwc'")
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
                  data_format: str | Sequence[str] = "nhwc", fix_freq: bool = True,
                  **other: Any) -> dict[str, Any] | None:
        """Per-op times (ONNX Runtime's profiler, mean of several runs) and their total, in us.

        On RKNN-Toolkit2 its eval_perf (a board's); fix_freq is the board's clock setting.
        """
        if self._toolkit is not None:
            return self._toolkit.call("eval_perf", is_print=is_print, fix_freq=fix_freq)
        self._require_runtime("eval_perf")
        self._ignored("eval_perf", other)
        feeds = (simulator.random_feeds(self._built) if inputs is None
                 else simulator.feeds(self._built, inputs, data_format))
        perf = simulator.profile(self._built, feeds)
        if is_print:
            for line in simulator.perf_lines(perf):
                self._log.line(line)
        return perf

    @_reports_errors(None)
    def eval_memory(self, is_print: bool = True) -> dict[str, Any] | None:
        """RKNN-Toolkit2's eval_memory (it needs a board); the simulator has no NPU memory."""
        if self._toolkit is not None:
            return self._toolkit.call("eval_memory", is_print=is_print)
        raise ChannelcutError("eval_memory measures a Rockchip board's NPU memory; the ONNX "
                              "Runtime simulator has none (use RKNN-Toolkit2 with a board)")

    @_reports_errors(FAILED)
    def accuracy_analysis(self, inputs: Sequence[Any], output_dir: str | Path = "./snapshot",
                          target: str | None = None, device_id: str | None = None,
                          data_format: str | Sequence[str] = "nhwc", **other: Any) -> int:
        """Compare every tensor of the built model with the float original, as RKNN does.

        `inputs`: one image or .npy path per model input (Toolkit2), or arrays. Writes
        `error_analysis.txt` in `output_dir` (RKNN-Toolkit2's layout: cosine and euclidean,
        entire and single; channelcut.rknn.accuracy) and prints one summary line per output.
        Channels the cut removed are left out of the original's tensors.
        """
        if self._toolkit is not None:
            paths = [str(i) if isinstance(i, str | Path) else i for i in inputs]
            return self._toolkit.call("accuracy_analysis", inputs=paths,
                                      output_dir=str(output_dir), target=target,
                                      device_id=device_id)
        if self._reference is None or self._built is None or self._float_built is None:
            raise ChannelcutError("accuracy_analysis compares the loaded and the built model; "
                                  "call load_pytorch or load_onnx, then build, first")
        if target is not None:
            _check_targets(target, "target")
            self._log.warn(f"accuracy_analysis: target {target}: no Rockchip NPU is reachable "
                           "here; comparing on the ONNX Runtime CPU simulator")
        self._ignored("accuracy_analysis", other)
        arrays = list(inputs) if isinstance(inputs, list | tuple) else inputs
        if isinstance(arrays, list):
            values = graph_inputs(self._built)
            arrays = [load_input(item, values[index], f"accuracy_analysis input {index}")
                      if isinstance(item, str | Path) and index < len(values) else item
                      for index, item in enumerate(arrays)]
        feeds = simulator.feeds(self._built, arrays, data_format)
        rows = accuracy.analyse(self._reference, self._float_built, self._built, feeds,
                                self._channel_map)
        path = Path(output_dir) / "error_analysis.txt"
        try:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ChannelcutError(f"{output_dir}: cannot create the output directory "
                                  f"({exc.strerror or exc})") from None
        io.write_atomic(path, "\n".join(accuracy.error_lines(rows)).encode() + b"\n")
        outputs = set(simulator.output_names(self._built))
        for row in rows:
            if row.name in outputs and row.entire is not None:
                self._log.line(f"{row.name}: cos sim {row.entire[0]:.7f}, euclidean "
                               f"{row.entire[1]:.5g}, max abs error {row.max_abs_error:.3g}")
        self._log.info(f"accuracy analysis of {len(rows)} tensors written to {path}")
        return 0

    @_reports_errors(FAILED)
    def hybrid_quantization_step1(self, *args: Any, **kwargs: Any) -> int:
        """Not available: channelcut quantizes every layer (one `E` line says so)."""
        raise ChannelcutError(HYBRID)

    @_reports_errors(FAILED)
    def hybrid_quantization_step2(self, *args: Any, **kwargs: Any) -> int:
        """Not available: channelcut quantizes every layer (one `E` line says so)."""
        raise ChannelcutError(HYBRID)

    def release(self) -> int:
        """Drop the models and the runtime; the config stays."""
        self._loaded: onnx.ModelProto | None = None
        self._core: onnx.ModelProto | None = None
        self._reference: onnx.ModelProto | None = None
        self._float_built: onnx.ModelProto | None = None
        self._built: onnx.ModelProto | None = None
        self._steps: dict[str, Preprocess] = {}
        self._channel_map: dict[str, tuple[int, np.ndarray]] = {}
        self._sessions: dict[tuple[int, ...], Any] = {}
        self._runtime_ready = False
        self._report: Any = None  # the pruning's channelcut.report.Report
        if self._toolkit is not None:
            self._toolkit.release()
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
