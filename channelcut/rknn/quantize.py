"""build(do_quantization=True) on the simulator: ONNX Runtime's static quantization to QDQ.

config's quantization options, as RKNN-Toolkit2 (and Toolkit1) spell them, map onto
`onnxruntime.quantization.quantize_static`:

- quantized_dtype: w8a8 / asymmetric_quantized-8 (Toolkit2) -> int8 activations with a zero
  point, int8 symmetric weights (RKNN-Toolkit2's scheme); asymmetric_affine-u8 (Toolkit1) ->
  uint8 activations and weights with zero points; dynamic_fixed_point-i8 (Toolkit1) -> int8
  symmetric activations and weights (ORT's scales are not powers of two, the closest ORT has).
- quantized_algorithm: normal -> MinMax; kl_divergence -> Entropy (ORT's KL-divergence
  threshold search); mmse -> Percentile 99.999 (RKNN searches the clip that minimises the mean
  squared error; ORT has no such search, and clipping the outliers is the closest it offers).
- quantized_method: channel (default) -> per_channel=True; layer -> per_channel=False.
- optimization_level: checked and passed to RKNN-Toolkit2's compiler; ORT's own graph
  optimisation does not depend on it.
"""

from __future__ import annotations

import contextlib
import io as io_text
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from channelcut import io
from channelcut.errors import ChannelcutError

# spelling -> (activation type, weight type, symmetric activations), ORT QuantType names
DTYPES: dict[str, tuple[str, str, bool]] = {
    "w8a8": ("QInt8", "QInt8", False),
    "asymmetric_quantized-8": ("QInt8", "QInt8", False),
    "asymmetric_affine-u8": ("QUInt8", "QUInt8", False),
    "dynamic_fixed_point-i8": ("QInt8", "QInt8", True),
}
ALGORITHMS = {"normal": "MinMax", "kl_divergence": "Entropy", "mmse": "Percentile"}
METHODS = {"channel": True, "layer": False}
OPTIMIZATION_LEVELS = (0, 1, 2, 3)
MMSE_PERCENTILE = 99.999
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Quantization:
    """config's quantization options, checked; the spellings are RKNN's."""

    dtype: str = "w8a8"
    algorithm: str = "normal"
    method: str = "channel"
    optimization_level: int = 3


def quantization_config(quantized_dtype: Any = None, quantized_algorithm: Any = None,
                        quantized_method: Any = None,
                        optimization_level: Any = None) -> Quantization:
    """The options, checked; None keeps RKNN-Toolkit2's default."""
    default = Quantization()
    dtype = _choice(quantized_dtype, DTYPES, "quantized_dtype", default.dtype)
    algorithm = _choice(quantized_algorithm, ALGORITHMS, "quantized_algorithm",
                        default.algorithm)
    method = _choice(quantized_method, METHODS, "quantized_method", default.method)
    level = default.optimization_level if optimization_level is None else optimization_level
    if isinstance(level, bool) or level not in OPTIMIZATION_LEVELS:
        raise ChannelcutError(f"optimization_level {optimization_level!r} is not known; use "
                              f"one of {', '.join(map(str, OPTIMIZATION_LEVELS))}")
    return Quantization(dtype, algorithm, method, int(level))


def _choice(value: Any, table: dict[str, Any], what: str, default: str) -> str:
    if value is None:
        return default
    if not isinstance(value, str) or value.lower() not in table:
        raise ChannelcutError(f"{what} {value!r} is not supported by the simulator; use one of "
                              f"{', '.join(table)}")
    return value.lower()


def ort_options(quantization: Quantization) -> dict[str, Any]:
    """quantize_static's keyword arguments for the options (enums by name, for the README)."""
    activation, weight, symmetric = DTYPES[quantization.dtype]
    extra: dict[str, Any] = {"ActivationSymmetric": symmetric,
                             "WeightSymmetric": weight == "QInt8"}
    if quantization.algorithm == "mmse":
        extra["CalibPercentile"] = MMSE_PERCENTILE
    return {"quant_format": "QDQ", "per_channel": METHODS[quantization.method],
            "activation_type": activation, "weight_type": weight,
            "calibrate_method": ALGORITHMS[quantization.algorithm], "extra_options": extra}


def quantize(model: onnx.ModelProto, samples: list[dict[str, np.ndarray]],
             quantization: Quantization) -> onnx.ModelProto:
    """The model in QDQ form, calibrated on `samples` (feeds by input name)."""
    from onnxruntime import quantization as ortq  # noqa: PLC0415 - heavy, build-time only

    class Reader(ortq.CalibrationDataReader):
        """Hands the calibration samples to ORT one at a time."""

        def __init__(self) -> None:
            self.samples: Iterator[dict[str, np.ndarray]] = iter(samples)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.samples, None)

    options = ort_options(quantization)
    options["quant_format"] = getattr(ortq.QuantFormat, options["quant_format"])
    options["activation_type"] = getattr(ortq.QuantType, options["activation_type"])
    options["weight_type"] = getattr(ortq.QuantType, options["weight_type"])
    options["calibrate_method"] = getattr(ortq.CalibrationMethod, options["calibrate_method"])
    quiet = _DropAdvice()
    logging.getLogger().addFilter(quiet)
    with tempfile.TemporaryDirectory(prefix="channelcut-quant-") as tmp:
        source, target = Path(tmp) / "float.onnx", Path(tmp) / "quantized.onnx"
        io.save_model(model, source)
        printed = io_text.StringIO()
        try:
            # The Entropy and Percentile calibrators print their progress: into the log.
            with contextlib.redirect_stdout(printed):
                ortq.quantize_static(str(source), str(target), Reader(), **options)
        except Exception as exc:  # noqa: BLE001 - ORT's quantizer raises many types
            raise ChannelcutError(f"ONNX Runtime cannot quantize the model "
                                  f"({io.error_line(exc)}); build(do_quantization=False) "
                                  "builds it in float") from None
        finally:
            logging.getLogger().removeFilter(quiet)
            if printed.getvalue():
                log.debug("onnxruntime.quantization: %s", printed.getvalue().strip())
        return onnx.load(str(target))


class _DropAdvice(logging.Filter):
    """Drops the quantizer's advice to run its shape pre-processing: the facade's model has
    static shapes already, and the advice is not the user's business."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage() and \
            "pre-process" not in record.getMessage()
