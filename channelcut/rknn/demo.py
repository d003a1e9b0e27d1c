"""RKNN-Toolkit1's model_pruning example (examples/pytorch/model_pruning/test.py), on channelcut.

This module is the demo itself, written as the user's script it reproduces: it only uses
`from channelcut.rknn import RKNN`, as a script written for RKNN-Toolkit would. It lives in
the package so that `channelcut demo` runs it from an installed copy (examples/ is not
installed); examples/model_pruning/test.py runs this same code under the seed's usage,
`python test.py [target] [device_id]`.

The network: three Conv2d -> BatchNorm2d -> ReLU blocks, seeded with 1024 before it is built,
every conv weight pruned with `ln_structured(amount=0.5, n=2, dim=0)` (half of the filters
zeroed) and traced with a 1x3x224x224 input drawn right after pruning. Pruning then shows the
seed's const change table, and the simulator's output matches PyTorch's (cos sim printed).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils import prune

from channelcut.rknn import RKNN

DEFAULT_TARGET = "rv1126"
SEED = 1024
INPUT_SIZE = [3, 224, 224]


class Block(nn.Module):
    """Conv2d (bias on, groups 1) -> BatchNorm2d -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=1)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Net(nn.Module):
    """The seed's network: 3 -> 64 (kernel 3), 64 -> 64 (kernel 1), 64 -> 64 (kernel 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.block1 = Block(3, 64, 3)
        self.block2 = Block(64, 64, 1)
        self.block3 = Block(64, 64, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block3(self.block2(self.block1(x)))


def pruned_net() -> Net:
    """The network with half of every conv's filters zeroed, permanently, in eval mode."""
    torch.manual_seed(SEED)
    net = Net()
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            prune.ln_structured(module, name="weight", amount=0.5, n=2, dim=0)
            prune.remove(module, "weight")  # bake the mask into the weight
    return net.eval()


def cos_sim(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two arrays, in float64 so rounding cannot push it past 1."""
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def run(target: str, device_id: str | None, workdir: Path) -> int:
    """The seed's flow: prune, trace, save, convert with pruning, run, compare; 0 on success."""
    net = pruned_net()
    x = torch.randn(1, *INPUT_SIZE)
    model_path = workdir / "model.pt"
    torch.jit.save(torch.jit.trace(net, x), str(model_path))

    rknn = RKNN(verbose=True)
    steps = [
        ("config model", lambda: rknn.config(model_pruning=True, target_platform=[target])),
        ("Loading model", lambda: rknn.load_pytorch(model=str(model_path),
                                                    input_size_list=[INPUT_SIZE])),
        ("Building model", lambda: rknn.build(do_quantization=False)),
        ("Export RKNN model", lambda: rknn.export_rknn(str(workdir / "model.rknn"))),
        ("Init runtime environment", lambda: rknn.init_runtime(target=target,
                                                               device_id=device_id)),
    ]
    for what, step in steps:
        print(f"--> {what}")
        ret = step()
        if ret != 0:
            print(f"{what} failed!")
            rknn.release()
            # A bad target is the caller's mistake (exit 2, like a usage error); others are not.
            return 2 if what == "config model" else 1
        print("done")

    print("--> Running model")
    outputs = rknn.inference(inputs=[x.numpy().transpose(0, 2, 3, 1)])  # NHWC, as RKNN takes
    rknn.release()
    if outputs is None:
        print("Running model failed!")
        return 1
    with torch.no_grad():
        expected = net(x).numpy()
    print("cos sim:", cos_sim(expected, outputs[0]))
    return 0


def main(argv: list[str] | None = None, prog: str = "channelcut demo") -> int:
    """Run the demo in a temporary directory: `[target] [device_id]`, as the seed's test.py."""
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) > 2:
        print(f"Usage: {prog} [target] [device_id]")
        return 2
    target = args[0] if args else DEFAULT_TARGET
    device_id = args[1] if len(args) > 1 else None
    with tempfile.TemporaryDirectory(prefix="channelcut-demo-") as workdir:
        return run(target, device_id, Path(workdir))


if __name__ == "__main__":
    sys.exit(main())
