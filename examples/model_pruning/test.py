"""RKNN-Toolkit1's model_pruning example on channelcut: python test.py [target] [device_id].

target: the platform, default rv1126 (rk1806, rk1808, rk3399pro, rv1109, rv1126, or an
RKNN-Toolkit2 one); device_id: which device, when several are connected (default none).
No NPU is reachable here, so the model runs on channelcut's ONNX Runtime simulator.

The demo's code is channelcut/rknn/demo.py, written as the user's script it reproduces (it only
uses `from channelcut.rknn import RKNN`). It lives in the package so that `channelcut demo`
runs the same code from an installed copy, where this examples/ folder does not exist; this
file is the seed's entry point to it, so the two cannot drift apart.
"""

import sys

from channelcut.rknn.demo import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="python test.py"))
