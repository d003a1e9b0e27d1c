"""Real torchvision and ultralytics (YOLOv8, YOLO11) architectures, and two of ours (a YOLO-style
detector and a U-Net), pruned the way users prune, exported to ONNX, for tests and bench.

torchvision's compiled ops do not load next to the CPU torch wheel, but its pure-Python model
definitions do (see /work/shared/NOTES.md). Weights are random, so `build` randomizes the
BatchNorm statistics and affine parameters and makes every classifier non-zero: an untrained
model would otherwise have identity BatchNorms and, for ViT, a zero head.

    model = build("resnet50", seed=0)
    prune_ln_structured(model, amount=0.5)      # half the output channels of every conv -> 0
    proto = export_onnx(model)                  # BatchNorm folded into Conv, opset 17

`SMALL_INPUTS` and `SMALL_KWARGS` give each architecture the smallest input it runs and exports
at with the TorchScript exporter: `build(name, **SMALL_KWARGS.get(name, {}))` then
`export_onnx(model, SMALL_INPUTS[name])`.

Bench scripts reach this module with `sys.path.insert(0, "<repo>/tests")`.
"""

from __future__ import annotations

import io
import os
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import onnx
import torch
from torch import nn
from torch.nn.utils import prune

TORCHVISION_PIN = "torchvision==0.28.0"
INSTALL_HINT = f"pip install --no-deps {TORCHVISION_PIN}"

# Smallest input (batch 1) each architecture runs and exports at. vgg16_bn: the TorchScript
# exporter needs AdaptiveAvgPool2d((7, 7))'s input divisible by 7, so 224 (7x7 after five
# pools); inception_v3: 75 is its minimum; vit_b_16 is built for 64 (SMALL_KWARGS).
SMALL_INPUTS: dict[str, tuple[int, ...]] = {
    **{name: (1, 3, 32, 32) for name in (
        "resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "mobilenet_v2",
        "mobilenet_v3_large", "efficientnet_b0", "mnasnet1_0", "densenet121", "googlenet",
        "squeezenet1_1", "shufflenet_v2_x1_0", "regnet_y_400mf", "convnext_tiny", "swin_t")},
    "inception_v3": (1, 3, 75, 75),
    "vgg16_bn": (1, 3, 224, 224),
    "vit_b_16": (1, 3, 64, 64),
    "yolo": (1, 3, 64, 64),
    "unet": (1, 3, 64, 64),
    # ultralytics: a multiple of the heads' largest stride (32), 4x4 cells at that stride; the
    # tests' time goes to exporting and analysing the graph, which the input size barely changes
    **{name: (1, 3, 128, 128) for name in ("yolov8n", "yolov8n-seg", "yolov8n-pose", "yolo11n")},
}
# Constructor arguments for the small inputs: ViT's position embedding fixes its image size.
SMALL_KWARGS: dict[str, dict[str, object]] = {"vit_b_16": {"image_size": 64}}


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


# Ultralytics models, built from the yaml files its package ships (no download): model name ->
# (class in ultralytics.nn.tasks, yaml). Their heads run in export mode, as `yolo export` does.
ULTRALYTICS: dict[str, tuple[str, str]] = {
    "yolov8n": ("DetectionModel", "yolov8n.yaml"),
    "yolov8n-seg": ("SegmentationModel", "yolov8n-seg.yaml"),
    "yolov8n-pose": ("PoseModel", "yolov8n-pose.yaml"),
    "yolo11n": ("DetectionModel", "yolo11n.yaml"),
}
ULTRALYTICS_HINT = "pip install --no-deps ultralytics ultralytics-thop"


def import_ultralytics() -> types.ModuleType:
    """`ultralytics.nn.tasks`, offline (it would otherwise check for updates and fonts).

    Raises ImportError with the install command when ultralytics is not installed.
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    try:
        from ultralytics.nn import tasks
    except ImportError as error:
        raise ImportError(f"ultralytics is needed for the YOLOv8/YOLO11 tests: "
                          f"`{ULTRALYTICS_HINT}` (--no-deps keeps the CPU torch wheel)"
                          ) from error
    return tasks


def _build_ultralytics(name: str, **kwargs: object) -> nn.Module:
    kind, yaml = ULTRALYTICS[name]
    model = getattr(import_ultralytics(), kind)(yaml, verbose=False, **kwargs)
    head = model.model[-1]
    head.export, head.format = True, "onnx"  # return the decoded outputs alone
    return model


def build(name: str, seed: int = 0, **kwargs: object) -> nn.Module:
    """A model by name, in eval mode, with non-degenerate random weights: a torchvision
    classification model, "yolo" / "unet" (ours), or an ultralytics one (`ULTRALYTICS`).
    `kwargs` go to the constructor.

    Deterministic for a given seed: the model is built and randomized under its own generator
    state, so the caller's torch RNG is left as it was.
    """
    ours = {"yolo": YoloDetector, "unet": UNet}
    if name in ULTRALYTICS:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _build_ultralytics(name, **kwargs)
            randomize(model)
        return model.eval()
    if name not in ours:
        models = import_torchvision().models
        if name not in models.list_models(module=models):
            raise ValueError(f"unknown model {name!r}; known: yolo, unet, "
                             f"{', '.join(models.list_models(module=models))}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ours[name](**kwargs) if name in ours else \
            models.get_model(name, weights=None, **kwargs)
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
    Outputs are "output", or "output0", "output1", ... for a model that returns several.
    nn.MultiheadAttention's eval fast path (`aten::_native_multi_head_attention`, ViT) has no
    TorchScript export, so it is off during the export.
    """
    model.eval()
    example = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        outputs = model(example)
    count = len(outputs) if isinstance(outputs, tuple | list) else 1
    output_names = ["output"] if count == 1 else [f"output{i}" for i in range(count)]
    names = {"input_names": ["input"], "output_names": output_names, "opset_version": 17}
    with torch.no_grad(), _mha_fastpath(False):
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


@contextmanager
def _mha_fastpath(enabled: bool) -> Iterator[None]:
    """nn.MultiheadAttention's fused inference path on or off, restored afterwards."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(enabled)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


class ConvBnAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> SiLU, "same" padding: YOLO's basic layer."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1) -> None:
        super().__init__(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.SiLU())


class Bottleneck(nn.Module):
    """Two convs with a residual Add around them."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.cv1 = ConvBnAct(channels, channels, 3)
        self.cv2 = ConvBnAct(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.cv2(self.cv1(x))


class CSPBlock(nn.Module):
    """YOLOv8's C2f: a 1x1 conv split in two halves (Tensor.split -> ONNX Split), bottlenecks on
    the second half, every intermediate concatenated, a 1x1 conv to mix them."""

    def __init__(self, cin: int, cout: int, blocks: int = 1) -> None:
        super().__init__()
        self.hidden = cout // 2
        self.cv1 = ConvBnAct(cin, 2 * self.hidden)
        self.blocks = nn.ModuleList(Bottleneck(self.hidden) for _ in range(blocks))
        self.cv2 = ConvBnAct((2 + blocks) * self.hidden, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Explicit sizes: chunk(2) exports as Shape -> Gather -> Div -> Slice instead of Split.
        parts = list(self.cv1(x).split([self.hidden, self.hidden], dim=1))
        for block in self.blocks:
            parts.append(block(parts[-1]))
        return self.cv2(torch.cat(parts, dim=1))


class SPPF(nn.Module):
    """Spatial pyramid pooling (fast): three chained 5x5 max pools, concatenated."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.cv1 = ConvBnAct(cin, cin // 2)
        self.pool = nn.MaxPool2d(5, 1, 2)
        self.cv2 = ConvBnAct(cin // 2 * 4, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        p1 = self.pool(x)
        p2 = self.pool(p1)
        return self.cv2(torch.cat([x, p1, p2, self.pool(p2)], dim=1))


class YoloDetector(nn.Module):
    """A small YOLO-style detector: CSP backbone, SPPF, an FPN/PAN neck (nn.Upsample -> Resize,
    Concat) and three detection heads (strides 8, 16, 32), one output each."""

    def __init__(self, width: int = 16, classes: int = 4, anchors: int = 3) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(ConvBnAct(3, w, 3, 2), ConvBnAct(w, 2 * w, 3, 2),
                                  CSPBlock(2 * w, 2 * w))
        self.down3 = nn.Sequential(ConvBnAct(2 * w, 4 * w, 3, 2), CSPBlock(4 * w, 4 * w, 2))
        self.down4 = nn.Sequential(ConvBnAct(4 * w, 8 * w, 3, 2), CSPBlock(8 * w, 8 * w, 2))
        self.down5 = nn.Sequential(ConvBnAct(8 * w, 16 * w, 3, 2), CSPBlock(16 * w, 16 * w),
                                   SPPF(16 * w, 16 * w))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.top4 = CSPBlock(24 * w, 8 * w)
        self.top3 = CSPBlock(12 * w, 4 * w)
        self.bottom_down3 = ConvBnAct(4 * w, 4 * w, 3, 2)
        self.bottom4 = CSPBlock(12 * w, 8 * w)
        self.bottom_down4 = ConvBnAct(8 * w, 8 * w, 3, 2)
        self.bottom5 = CSPBlock(24 * w, 16 * w)
        per_cell = anchors * (5 + classes)
        self.heads = nn.ModuleList(nn.Sequential(ConvBnAct(c, c, 3), nn.Conv2d(c, per_cell, 1))
                                   for c in (4 * w, 8 * w, 16 * w))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p3 = self.down3(self.stem(x))
        p4 = self.down4(p3)
        p5 = self.down5(p4)
        t4 = self.top4(torch.cat([self.up(p5), p4], dim=1))
        n3 = self.top3(torch.cat([self.up(t4), p3], dim=1))
        n4 = self.bottom4(torch.cat([self.bottom_down3(n3), t4], dim=1))
        n5 = self.bottom5(torch.cat([self.bottom_down4(n4), p5], dim=1))
        return tuple(head(f) for head, f in zip(self.heads, (n3, n4, n5)))


class DoubleConv(nn.Sequential):
    """U-Net's (3x3 conv -> BatchNorm -> ReLU) twice."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


class UNet(nn.Module):
    """A small U-Net: three downsamplings, a bottleneck, and a decoder whose every level
    concatenates the encoder's skip; upsampling by ConvTranspose2d on the two deep levels and
    by bilinear nn.Upsample + 1x1 conv on the last."""

    def __init__(self, width: int = 16, classes: int = 3) -> None:
        super().__init__()
        w = width
        self.enc = nn.ModuleList([DoubleConv(3, w), DoubleConv(w, 2 * w), DoubleConv(2 * w, 4 * w)])
        self.pool = nn.MaxPool2d(2)
        self.middle = DoubleConv(4 * w, 8 * w)
        self.up = nn.ModuleList([
            nn.ConvTranspose2d(8 * w, 4 * w, 2, stride=2),
            nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2),
            nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(2 * w, w, 1)),
        ])
        self.dec = nn.ModuleList([DoubleConv(8 * w, 4 * w), DoubleConv(4 * w, 2 * w),
                                  DoubleConv(2 * w, w)])
        self.head = nn.Conv2d(w, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for encode in self.enc:
            x = encode(x)
            skips.append(x)
            x = self.pool(x)
        x = self.middle(x)
        for up, decode, skip in zip(self.up, self.dec, reversed(skips)):
            x = decode(torch.cat([up(x), skip], dim=1))
        return self.head(x)
