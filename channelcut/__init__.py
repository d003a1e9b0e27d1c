"""channelcut: make structured-pruned networks actually small by cutting provably dead channels."""

from channelcut.api import CutResult, cut
from channelcut.errors import ChannelcutError

__all__ = ["ChannelcutError", "CutResult", "cut"]
__version__ = "0.1.0"
