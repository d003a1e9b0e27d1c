"""Turn a PyTorch model (a TorchScript file or an nn.Module) into an in-memory ONNX model.

torch is an optional extra, imported only when a PyTorch model is converted, so that
`import channelcut` works without it.

Which exporter (torch 2.13 has two, see NOTES.md):
- a TorchScript file, or a `torch.jit.ScriptModule`: the TorchScript exporter
  (`dynamo=False`), the only one that can export a `torch.jit.load`-ed model;
- any other `nn.Module`: the `torch.export` exporter (`dynamo=True`), because it keeps the
  parameter names (`block1.conv.weight`), so the const change table names the user's layers
  instead of `onnx::Conv_29`. When it cannot export a model (data-dependent control flow, for
  example) the TorchScript exporter, which traces, gets a second try.
Both fold BatchNorm into the preceding Conv because the model is exported in eval mode, and
both give weights as initializers with their data in the proto (no external files).
"""

from __future__ import annotations

import io as bytes_io
import logging
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from numbers import Integral
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx

from channelcut.errors import ChannelcutError
from channelcut.io import error_line

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# 18 is the torch.export exporter's own default (converting its graph down to 17 goes through
# onnx's version converter); 17+ gives LayerNormalization as one op.
OPSET = 18
INSTALL_HINT = "pip install 'channelcut[torch]'"
TORCHSCRIPT_HINT = "save it with torch.jit.save(torch.jit.trace(model, example_input), path)"


def to_onnx(model: Any, input_shapes: Sequence[Sequence[int]]) -> onnx.ModelProto:
    """Export `model` (a TorchScript file path or an nn.Module) for float inputs of these shapes.

    `input_shapes` are full shapes, batch included. Inputs are named `input0`, `input1`, ...
    and outputs `output0`, ... . The caller's module comes back in the training mode it had.
    """
    torch = _import_torch()
    shapes = _check_shapes(input_shapes)
    if isinstance(model, str | Path):
        module = _load_torchscript(torch, Path(model))
    elif isinstance(model, torch.nn.Module):
        module = model
    else:
        raise ChannelcutError(
            f"model is a {type(model).__name__}; give a TorchScript file path or a "
            "torch.nn.Module"
        )
    examples = tuple(torch.zeros(shape) for shape in shapes)
    with eval_mode(module):  # BatchNorm folds into Conv and Dropout vanishes only in eval mode
        output_count = _count_outputs(torch, module, examples, shapes)
        names = {"input_names": [f"input{i}" for i in range(len(shapes))],
                 "output_names": [f"output{i}" for i in range(output_count)]}
        if isinstance(module, torch.jit.ScriptModule):
            return _export_torchscript(torch, module, examples, names)
        try:
            return _export_dynamo(torch, module, examples, names)
        except Exception as exc:  # noqa: BLE001 - any failure of this exporter: try the other
            log.info("torch.export exporter failed (%s); tracing instead", error_line(exc))
            return _export_torchscript(torch, module, examples, names)


def example_shapes(example_inputs: Any) -> list[tuple[int, ...]]:
    """The input shapes `cut()` exports a module for: those of its `example_inputs`, one float
    tensor or a sequence of them."""
    torch = _import_torch()
    examples = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else example_inputs
    if isinstance(examples, list | tuple) and examples and all(
            isinstance(t, torch.Tensor) and t.is_floating_point() for t in examples):
        return [tuple(int(d) for d in t.shape) for t in examples]
    given = "missing" if example_inputs is None else f"a {type(example_inputs).__name__}"
    raise ChannelcutError(
        f"example_inputs is {given}; a torch.nn.Module needs example_inputs: a float tensor or "
        "a tuple of them, one per module input, for example (torch.randn(1, 3, 224, 224),)"
    )


@contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """The module in eval mode; afterwards every submodule's training flag and attributes are
    as they were.

    Attributes matter because a forward may cache what it computes (ultralytics' Detect keeps
    its anchors and the input shape they are for): under the torch.export exporter those are
    fake tensors, which the caller's module must not keep (they fail in deepcopy or the next
    export).
    """
    states = {m: dict(vars(m)) for m in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for submodule, state in states.items():
            attributes = vars(submodule)
            for name in [n for n in attributes if n not in state]:
                del attributes[name]
            for name, value in state.items():
                if attributes.get(name) is not value:
                    attributes[name] = value


def _import_torch() -> Any:
    try:
        import torch  # noqa: PLC0415 - optional dependency
    except ModuleNotFoundError:
        raise ChannelcutError(
            f"loading a PyTorch model needs torch: {INSTALL_HINT}"
        ) from None
    return torch


def _check_shapes(input_shapes: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    """The shapes as int tuples; a ChannelcutError for anything that is not a list of dims."""
    example = "for example [[1, 3, 224, 224]] for one image input"
    if isinstance(input_shapes, str | bytes) or not isinstance(input_shapes, Sequence) or \
            not input_shapes:
        raise ChannelcutError(f"input shapes must be a non-empty list of shapes, {example}")
    shapes = []
    for shape in input_shapes:
        is_list = isinstance(shape, Sequence) and not isinstance(shape, str | bytes)
        if not is_list or not shape or not all(
                isinstance(d, Integral) and not isinstance(d, bool) and d > 0 for d in shape):
            raise ChannelcutError(
                f"input shape {shape!r} is not a list of positive integers, {example}"
            )
        shapes.append(tuple(int(d) for d in shape))
    return shapes


def _load_torchscript(torch: Any, path: Path) -> torch.jit.ScriptModule:
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "no such file"
        raise ChannelcutError(f"{path}: {what}; give the path of a TorchScript (.pt) file")
    try:
        with warnings.catch_warnings():
            # torch 2.13 marks TorchScript deprecated; reading the user's file is still right.
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, ValueError, ... here
        # torch's message runs on for several sentences; the first says what failed.
        reason = error_line(exc).split(". ")[0]
        raise ChannelcutError(
            f"{path}: not a TorchScript file ({reason}); {TORCHSCRIPT_HINT}"
        ) from None


def _count_outputs(
    torch: Any, module: Any, examples: tuple[Any, ...], shapes: list[tuple[int, ...]]
) -> int:
    """Run the model once: a clear error when the shapes do not fit, and its output count."""
    try:
        with torch.no_grad():
            result = module(*examples)
    except Exception as exc:  # noqa: BLE001 - a shape mismatch surfaces as many error types
        given = ", ".join(str(list(s)) for s in shapes)
        raise ChannelcutError(
            f"inputs of shape {given} (batch included) do not fit the model "
            f"({error_line(exc)}); give one shape per model input, as the model expects"
        ) from None
    count = len(_flat_tensors(torch, result))
    if count == 0:
        raise ChannelcutError("the model returns no tensor; it has nothing to convert")
    return count


def _flat_tensors(torch: Any, value: Any) -> list[Any]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list | tuple):
        return [t for item in value for t in _flat_tensors(torch, item)]
    return []


def _export_torchscript(
    torch: Any, module: Any, examples: tuple[Any, ...], names: dict[str, list[str]]
) -> onnx.ModelProto:
    buffer = bytes_io.BytesIO()
    with warnings.catch_warnings():
        # The exporter's deprecation notice concerns our choice of exporter, not the user.
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, examples, buffer, dynamo=False, opset_version=OPSET,
                              do_constant_folding=True, **names)
        except Exception as exc:  # noqa: BLE001 - the exporter's errors share no base type
            raise ChannelcutError(
                f"PyTorch cannot export the model to ONNX ({error_line(exc)}); check that "
                "every op in it has an ONNX equivalent"
            ) from None
    return onnx.load_model_from_string(buffer.getvalue())


def _export_dynamo(
    torch: Any, module: Any, examples: tuple[Any, ...], names: dict[str, list[str]]
) -> onnx.ModelProto:
    # artifacts_dir: the exporter may write reports; never into the user's directory.
    with tempfile.TemporaryDirectory(prefix="channelcut-export-") as artifacts, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, examples, dynamo=True, opset_version=OPSET,
                                    verbose=False, artifacts_dir=artifacts, **names)
    return program.model_proto
