"""RKNN-Toolkit2 as the facade's backend: channelcut cuts, the vendor toolkit compiles and runs.

The facade loads and prunes the model itself (its log and report stay channelcut's); `build`
then hands the cut ONNX model to a fresh `rknn.api.RKNN`: its config (the user's options, less
channelcut's own), load_onnx and build. export_rknn, init_runtime, inference, eval_perf,
eval_memory and accuracy_analysis are the toolkit's. The toolkit prints its own log lines and
returns RKNN's codes, which the facade passes on.
"""

from __future__ import annotations

import importlib.util
import inspect
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from channelcut import io
from channelcut.errors import ChannelcutError
from channelcut.rknn.preprocess import Preprocess

BACKENDS = ("onnxruntime", "rknn-toolkit2")
INSTALL = ("RKNN-Toolkit2 is not installed: pip install rknn-toolkit2 (Python 3.11 wheel; see "
           "bench/rknn_env.sh for a virtual environment it runs in), or use "
           "RKNN(backend=\"onnxruntime\")")


def available() -> bool:
    """Whether `rknn.api` (RKNN-Toolkit2) can be imported."""
    try:
        return importlib.util.find_spec("rknn.api") is not None
    except (ImportError, ValueError):
        return False


def choose_backend(backend: str | None) -> str:
    """The backend RKNN() uses: the toolkit when importable, unless one is asked for."""
    if backend is None:
        return "rknn-toolkit2" if available() else "onnxruntime"
    if backend not in BACKENDS:
        raise ChannelcutError(f"backend {backend!r} is not known; use one of "
                              f"{', '.join(BACKENDS)}")
    if backend == "rknn-toolkit2" and not available():
        raise ChannelcutError(INSTALL)
    return backend


def split_preprocessing(steps: dict[str, Preprocess]) -> tuple[dict[str, Preprocess],
                                                              dict[str, Any]]:
    """The preprocessing as the toolkit takes it: (reorders left in the model, its config).

    RKNN-Toolkit2 has no reorder_channel and applies mean/std to the raw input: a reorder
    stays a Gather in front of the model, and mean/std go to the toolkit in the raw input's
    channel order (out[c] = (raw[order[c]] - mean[c]) / std[c], so raw channel j takes
    mean[inverse[j]]).
    """
    orders = {name: Preprocess(order=step.order) for name, step in steps.items()}
    lists: dict[str, list[list[float] | None]] = {"mean_values": [], "std_values": []}
    for step in steps.values():
        inverse = None if step.order is None else [int(i) for i in np.argsort(step.order)]
        for key, values in (("mean_values", step.mean), ("std_values", step.std)):
            if values is not None and inverse is not None and len(values) > 1:
                values = [values[i] for i in inverse]
            lists[key].append(values)
    config = {}
    for key, neutral in (("mean_values", 0.0), ("std_values", 1.0)):
        given = [len(v) for v in lists[key] if v is not None]
        if given:  # an input without them gets the neutral values
            config[key] = [v if v is not None else [neutral] * max(given) for v in lists[key]]
    return orders, config


class Toolkit:
    """One `rknn.api.RKNN` per build, fed the cut model through a temporary ONNX file."""

    def __init__(self, verbose: bool, verbose_file: str | Path | None) -> None:
        self.verbose, self.verbose_file = verbose, verbose_file
        self.rknn: Any = None
        self._tmp = tempfile.TemporaryDirectory(prefix="channelcut-rknn-")

    def build(self, model: onnx.ModelProto, config: dict[str, Any],
              build_args: dict[str, Any]) -> int:
        """config + load_onnx + build of the toolkit on `model`; the toolkit's return code."""
        from rknn.api import RKNN as ToolkitRKNN  # noqa: PLC0415 - optional vendor package

        self.release()
        path = Path(self._tmp.name) / "cut.onnx"
        io.save_model(model, path)
        self.rknn = ToolkitRKNN(verbose=self.verbose, verbose_file=self.verbose_file)
        for method, kwargs in (("config", config), ("load_onnx", {"model": str(path)}),
                               ("build", build_args)):
            ret = self.call(method, **kwargs)
            if ret != 0:
                return ret
        return 0

    @staticmethod
    def config_names() -> set[str]:
        """The keyword arguments the toolkit's config takes (Toolkit1-only ones are not)."""
        from rknn.api import RKNN as ToolkitRKNN  # noqa: PLC0415 - optional vendor package

        parameters = inspect.signature(ToolkitRKNN.config).parameters.values()
        return {p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD} - {"self"}

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """The toolkit's method on the built model; its exceptions as one ChannelcutError."""
        if self.rknn is None:
            raise ChannelcutError(f"no built model; call build (or load_rknn) before {method}")
        try:
            return getattr(self.rknn, method)(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the toolkit raises ValueError after its E line
            lines = [line for line in str(exc).splitlines() if line.strip()]
            raise ChannelcutError(f"RKNN-Toolkit2's {method} failed"
                                  f"{': ' + lines[-1].strip() if lines else ''}") from None

    def load_rknn(self, path: str | Path) -> int:
        """The toolkit's load_rknn (a .rknn file; its PC simulator cannot run one)."""
        from rknn.api import RKNN as ToolkitRKNN  # noqa: PLC0415 - optional vendor package

        self.release()
        self.rknn = ToolkitRKNN(verbose=self.verbose, verbose_file=self.verbose_file)
        return self.call("load_rknn", str(path))

    def release(self) -> None:
        if self.rknn is not None:
            self.rknn.release()
            self.rknn = None
