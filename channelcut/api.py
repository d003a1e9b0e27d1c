"""The public entry point: `cut()` an ONNX model and get the smaller model and its report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from channelcut.report import Report


@dataclass
class CutResult:
    """The cut model, what was cut, and (when verified) how its outputs compare."""

    model: onnx.ModelProto
    report: Report
    # tensor name -> (channel axis, original positions kept along that axis), for every
    # tensor that lost channels; lets a caller compare original and cut intermediates.
    channel_map: dict[str, tuple[int, np.ndarray]] = field(default_factory=dict)


def cut(
    model: onnx.ModelProto | str | Path,
    *,
    input_shapes: dict[str, list[int] | tuple[int, ...]] | None = None,
    verify: bool = True,
    threshold: float = 0.9999,
) -> CutResult:
    """Remove every channel that provably cannot change any output; the input is not modified."""
    raise NotImplementedError("core analysis lands in the next commit")
