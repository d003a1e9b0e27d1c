"""channelcut: make structured-pruned networks actually small by cutting provably dead channels."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from channelcut.errors import ChannelcutError

if TYPE_CHECKING:
    from channelcut.api import CutResult, cut

__all__ = ["ChannelcutError", "CutResult", "cut"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """`cut` and `CutResult` import the engine (onnx-ir, sympy) on first use, so that
    `import channelcut` (and `channelcut --help`) stays fast."""
    if name in ("cut", "CutResult"):
        from channelcut import api  # noqa: PLC0415

        return getattr(api, name)
    raise AttributeError(f"module 'channelcut' has no attribute {name!r}")
