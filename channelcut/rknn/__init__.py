"""RKNN-Toolkit style facade: a user's conversion script runs with one import changed.

    from channelcut.rknn import RKNN

Modules: `facade` (the RKNN class), `simulator` (the model in ONNX Runtime, fed as RKNN feeds
it), `preprocess` (mean/std/reorder as nodes in front of the inputs), `demo` (the seed's
model_pruning example).
"""

from channelcut.rknn.facade import (FAILED, RKNN, TARGETS, TOOLKIT1_TARGETS,
                                    TOOLKIT2_TARGETS)

__all__ = ["FAILED", "RKNN", "TARGETS", "TOOLKIT1_TARGETS", "TOOLKIT2_TARGETS"]
