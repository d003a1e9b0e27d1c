"""How channelcut's analyse-and-cut time grows with the graph: synthetic residual networks of
N blocks (conv -> relu -> conv -> add -> relu, a quarter of each conv's filters zeroed, some
of them constant through their bias), N doubling each row. Linear growth shows as a flat
"ms per node" column.

    python bench/scaling.py [--blocks 25,50,100,200,400,800] [--width 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnx
from onnx import helper, numpy_helper

import channelcut


def residual_chain(blocks: int, width: int, seed: int = 0) -> onnx.ModelProto:
    """x -> stem conv -> N x [conv3x3 -> relu -> conv3x3 -> + -> relu] -> conv1x1 -> y."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def conv(x: str, y: str, cin: int, cout: int, k: int) -> None:
        w = (rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32)
        b = rng.uniform(-0.5, 0.5, cout).astype(np.float32)
        dead = rng.choice(cout, cout // 4, replace=False)
        w[dead] = 0.0  # ln_structured-style filters: zero weights, the bias stays
        inits.extend([numpy_helper.from_array(w, f"{y}_w"), numpy_helper.from_array(b, f"{y}_b")])
        nodes.append(helper.make_node("Conv", [x, f"{y}_w", f"{y}_b"], [y], name=y,
                                      pads=[k // 2] * 4))

    conv("x", "stem", 3, width, 3)
    nodes.append(helper.make_node("Relu", ["stem"], ["s0"]))
    for i in range(blocks):
        conv(f"s{i}", f"b{i}a", width, width, 3)
        nodes.append(helper.make_node("Relu", [f"b{i}a"], [f"b{i}r"]))
        conv(f"b{i}r", f"b{i}b", width, width, 3)
        nodes.append(helper.make_node("Add", [f"b{i}b", f"s{i}"], [f"b{i}s"]))
        nodes.append(helper.make_node("Relu", [f"b{i}s"], [f"s{i + 1}"]))
    conv(f"s{blocks}", "y", width, 10, 1)
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 10, 16, 16])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def best_time(model: onnx.ModelProto, fold: bool, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        channelcut.cut(model, fold=fold, verify=False)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", default="25,50,100,200,400,800")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{'blocks':>7} {'nodes':>7} {'zero-only s':>12} {'ms/node':>8} {'full s':>8} "
          f"{'ms/node':>8}")
    for blocks in (int(b) for b in args.blocks.split(",")):
        model = residual_chain(blocks, args.width)
        nodes = len(model.graph.node)
        zero = best_time(model, False, args.repeats)
        full = best_time(model, True, args.repeats)
        print(f"{blocks:>7} {nodes:>7} {zero:>12.3f} {1e3 * zero / nodes:>8.3f} {full:>8.3f} "
              f"{1e3 * full / nodes:>8.3f}", flush=True)


if __name__ == "__main__":
    main()
