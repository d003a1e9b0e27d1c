"""Dynamic input dims that no input shape set: the line that says which took the default size
and how to set them, and verification at a second size (a cut must not bake the assumed size in).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextvars import ContextVar

import numpy as np
import onnx

from channelcut import verify
from channelcut.errors import ChannelcutError
from channelcut.report import OutputCheck

log = logging.getLogger(__name__)

# Verification also runs with every assumed dim at this size.
OTHER_DYNAMIC_DIM = 3
# How messages tell the user to set input shapes: "api" (the input_shapes= argument of cut) or
# "cli" (the --input-shape flag; the console script sets it while it runs).
shape_wording: ContextVar[str] = ContextVar("shape_wording", default="api")


def assumed_dims_line(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]],
                      assumed: dict[str, list[int]], verified: bool = True) -> str:
    """One line: which dynamic dims took the default size, what that means, how to set them
    (worded for the caller: see `shape_wording`)."""
    labels = _dim_labels(model, assumed)
    taken = "; ".join(f"{name!r} {', '.join(labels[name].values())}" for name in assumed)
    also = f", and verification also runs with them at {OTHER_DYNAMIC_DIM}" if verified else ""
    return (f"dynamic input dims taken as {verify.DEFAULT_DYNAMIC_DIM}: {taken}; FLOPs are counted for "
            f"{_sizes(shapes, assumed)}{also}; {_how_to_set(shapes, labels)}")


def _dim_labels(model: onnx.ModelProto, assumed: dict[str, list[int]]
                ) -> dict[str, dict[int, str]]:
    """Per input, a name for each assumed axis: its dim_param, else D<axis>."""
    declared = {v.name: v.type.tensor_type.shape.dim for v in verify.graph_inputs(model)}
    return {name: {axis: declared[name][axis].dim_param or f"D{axis}" for axis in axes}
            for name, axes in assumed.items()}


def _sizes(shapes: dict[str, tuple[int, ...]], names: Sequence[str]) -> str:
    return ", ".join(f"{name!r} {'x'.join(map(str, shapes[name]))}" for name in names)


def _how_to_set(shapes: dict[str, tuple[int, ...]], labels: dict[str, dict[int, str]]) -> str:
    """`set the real sizes with ...`: the --input-shape flags or the input_shapes= argument."""
    settings = []
    for name, named in labels.items():
        example = [named.get(axis, str(d)) for axis, d in enumerate(shapes[name])]
        if shape_wording.get() == "cli":
            settings.append(f"--input-shape {name}:{','.join(example)}")
        else:
            settings.append(f"{name!r}: [{', '.join(example)}]")
    how = " ".join(settings) if shape_wording.get() == "cli" else \
        f"input_shapes={{{', '.join(settings)}}}"
    placeholders = dict.fromkeys(label for named in labels.values() for label in named.values())
    return f"set the real sizes with {how} (numbers for {', '.join(placeholders)})"


def other_shapes(shapes: dict[str, tuple[int, ...]], assumed: dict[str, list[int]],
                 set_dynamic: dict[str, list[int]] | None = None
                 ) -> dict[str, tuple[int, ...]]:
    """`shapes` with every assumed dim at OTHER_DYNAMIC_DIM (one value for all: dims that must
    agree still do) and every dynamic dim the caller set (`set_dynamic`) at twice its size (a
    multiple of a stride stays one, and dims set alike stay alike)."""
    def other(name: str, axis: int, d: int) -> int:
        if axis in assumed.get(name, ()):
            return OTHER_DYNAMIC_DIM
        return 2 * d if axis in (set_dynamic or {}).get(name, ()) else d
    return {name: tuple(other(name, axis, d) for axis, d in enumerate(dims))
            for name, dims in shapes.items()}


def set_dynamic_dims(model: onnx.ModelProto, overrides: dict[str, Sequence[int]] | None
                     ) -> dict[str, list[int]]:
    """Per input the caller gave a shape for, the axes the model declares dynamic: the cut
    model keeps them dynamic, so it must hold at other sizes than the one set too."""
    dynamic = {}
    for value in verify.graph_inputs(model):
        dims = verify.declared_dims(value)
        if dims is not None and value.name in (overrides or {}):
            axes = [axis for axis, d in enumerate(dims) if d is None]
            if axes:
                dynamic[value.name] = axes
    return dynamic


def compare_sizes(original: onnx.ModelProto, cut: onnx.ModelProto,
                  shapes: dict[str, tuple[int, ...]], assumed: dict[str, list[int]],
                  samples: list[dict[str, np.ndarray]] | None = None,
                  advance: Callable[[int], None] | None = None,
                  ranges: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
                  set_dynamic: dict[str, list[int]] | None = None
                  ) -> list[OutputCheck]:
    """`compare` at `shapes` (on `samples`, the caller's or verify.input_sets) and, where dims
    are dynamic, again at a second size (`other_shapes`: assumed dims at OTHER_DYNAMIC_DIM,
    those the caller set, `set_dynamic`, at twice their size) on seeded input sets (inside the
    declared input `ranges`; only the first set where a set dim doubled, whose inputs may be
    large; skipped, with a warning, when the original does not run there or the inputs would
    not fit in memory)."""
    try:
        per_size = [verify.compare(original, cut, shapes, samples=samples, advance=advance)]
    except verify.OriginalDoesNotRun as exc:
        if not any(axis > 0 for axes in assumed.values() for axis in axes):
            raise
        # a spatial size of 1 is often what it cannot run at
        raise ChannelcutError(
            f"the original model does not run in ONNX Runtime ({exc.reason}) at the input size "
            f"assumed for its dynamic dims, {_sizes(shapes, list(assumed))}: "
            f"{_how_to_set(shapes, _dim_labels(original, assumed))}, or fix the model or skip "
            "verification with --no-verify") from None
    if assumed or set_dynamic:
        other = other_shapes(shapes, assumed, set_dynamic)
        names = list(dict.fromkeys([*assumed, *(set_dynamic or {})]))
        try:
            count = 1 if set_dynamic else None
            within = {"samples": verify.input_sets(original, other, count=count, ranges=ranges)} \
                if ranges or count else {}
            per_size.append(verify.compare(original, cut, other, **within))
        except verify.OriginalDoesNotRun as exc:
            log.warning("verification at the second input size (%s) skipped: the original "
                        "model does not run there (%s)", _sizes(other, names), exc.reason)
        except verify.InputsTooLarge as exc:
            log.warning("verification at the second input size (%s) skipped: %s",
                        _sizes(other, names), exc)
    return verify.worst(per_size)
