"""Real torchvision architectures, pruned the way users prune, exported to ONNX, for tests and bench.

torchvision's compiled ops do not load next to the CPU torch wheel, but its pure-Python model
definitions do (see /work/shared/NOTES.md). Weights are random, so `build` randomizes the
BatchNorm statistics and affine parameters and makes every classifier non-zero: an untrained
model would otherwise have identity BatchNorms and, for ViT, a zero head.

    model = build("resnet50", seed=0)
    prune_ln_structured(model, amount=0.5)      # half the output channels of every conv -> 0
    proto = export_onnx(model)                  # BatchNorm folded into Conv, opset 17

Bench scripts reach this module with `sys.path.insert(0, "<repo>/tests")`.
"""

from __future__ import annotations

import io
import sys
import types
from pathlib import Path

import onnx
import torch
from torch import nn
from torch.nn.utils import prune

TORCHVISION_PIN = "torchvision==0.28.0"
INSTALL_HINT = f"pip install --no-deps {TORCHVISION_PIN}"


def import_torchvision() -> types.ModuleType:
    """Import torchvision's model definitions without its compiled ops (absent on the CPU wheel).

    Raises ImportError with the install command when torchvision is not installed.
    """
    # torchvision/__init__ imports _meta_registrations, which registers fake kernels for its
    # compiled ops and fails when they are missing; the models never use them.
    sys.modules.setdefault("torchvision._meta_registrations",
                           types.ModuleType("torchvision._meta_registrations"))
    try:
        import torchvision
    except ImportError as error:
        raise ImportError(f"torchvision is needed for real-model tests and benchmarks: "
                          f"`{INSTALL_HINT}` (matches torch 2.13; --no-deps keeps the CPU "
                          f"torch wheel)") from error
    return torchvision


def build(name: str, seed: int = 0) -> nn.Module:
    """A torchvision classification model by name, in eval mode, with non-degenerate random weights.

    Deterministic for a given seed: the model is built and randomized under its own generator
    state, so the caller's torch RNG is left as it was.
    """
    models = import_torchvision().models
    if name not in models.list_models(module=models):
        raise ValueError(f"unknown torchvision classification model {name!r}; "
                         f"known: {', '.join(models.list_models(module=models))}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = models.get_model(name, weights=None)
        randomize(model)
    return model.eval()


@torch.no_grad()
def randomize(model: nn.Module) -> None:
    """Give normalization layers random statistics and affine parameters, and Linears non-zero weights.

    Running variance stays in 0.5..2 and the affine scale in 0.5..1.5 so activations neither
    vanish nor explode through a deep net. Draws from the global torch RNG.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._NormBase):
            if module.running_mean is not None:
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
            if module.affine:
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)) and module.weight is not None:
            module.weight.uniform_(0.5, 1.5)
            module.bias.uniform_(-0.5, 0.5)
        elif isinstance(module, nn.Linear):
            # torchvision zero-inits some heads (ViT) and biases; a zero head makes every
            # channel provably dead and the test meaningless.
            nn.init.kaiming_uniform_(module.weight, a=5 ** 0.5)
            if module.bias is not None:
                module.bias.uniform_(-0.1, 0.1)


def prune_ln_structured(model: nn.Module, amount: float = 0.5, dim: int = 0, n: int = 2,
                        linear: bool = False) -> nn.Module:
    """Zero whole channels of every Conv2d (and Linear when `linear`) the way users do, permanently.

    `torch.nn.utils.prune.ln_structured` picks the `amount` fraction of slices along `dim`
    (0: output channels) with the smallest Ln norm; `prune.remove` bakes the mask into the
    weight. Biases are left alone, as torch leaves them. Returns the same model.
    """
    kinds = (nn.Conv2d, nn.Linear) if linear else (nn.Conv2d,)
    for module in model.modules():
        if isinstance(module, kinds):
            prune.ln_structured(module, name="weight", amount=amount, n=n, dim=dim)
            prune.remove(module, "weight")
    return model


def export_onnx(model: nn.Module, input_shape: tuple[int, ...] = (1, 3, 224, 224),
                path: str | Path | None = None, dynamo: bool = False) -> onnx.ModelProto:
    """Export an eval-mode model to ONNX opset 17 with BatchNorm folded into Conv; optionally save it.

    Defaults to the TorchScript exporter (`dynamo=False`), which takes about 1.5 s for a
    ResNet-50 here; `dynamo=True` gives the same node and parameter counts but is slower.
    """
    model.eval()
    example = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0))
    names = {"input_names": ["input"], "output_names": ["output"], "opset_version": 17}
    with torch.no_grad():
        if dynamo:
            proto = torch.onnx.export(model, (example,), dynamo=True, **names).model_proto
        else:
            buffer = io.BytesIO()
            torch.onnx.export(model, (example,), buffer, dynamo=False,
                              do_constant_folding=True, **names)
            proto = onnx.load_from_string(buffer.getvalue())
    if path is not None:
        onnx.save(proto, str(path))
    return proto
