"""ort-cpu's cut at the detected channel block against the same cut at other alignments.

channelcut.targets picks ort-cpu's alignment from the CPU (16 floats with AVX-512, 8 with
AVX2). This checks that choice where it runs: each model in each pruning (bench/targets.py's
exports) is cut for ort-cpu as detected and with `align=N` for each --aligns value (the guard
on, as a user gets it), and the original and every cut are timed alternated in one process
(CPU time, one thread: channelcut.guard.ort_latencies), next to their FLOP ratios.

    python bench/ort_align.py --models mobilenet_v2 yolov8n --prunings groups --aligns 16
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402 - after the path
import targets  # noqa: E402


def feeds_for(model) -> dict[str, np.ndarray]:
    """Seeded standard-normal values for every graph input."""
    rng = np.random.default_rng(0)
    inits = {t.name for t in model.graph.initializer}
    return {v.name: rng.standard_normal([d.dim_value for d in v.type.tensor_type.shape.dim])
            .astype(np.float32) for v in model.graph.input if v.name not in inits}


def main() -> None:
    import channelcut
    from channelcut import guard
    from channelcut.targets import cpu_vector_channels

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(targets.MODELS))
    parser.add_argument("--prunings", nargs="+", default=list(targets.PRUNINGS),
                        choices=targets.PRUNINGS)
    parser.add_argument("--aligns", nargs="+", type=int, default=[16],
                        help="alignments to compare with the detected block (default: 16)")
    parser.add_argument("--budget", type=float, default=20.0,
                        help="seconds of alternated runs per model (default: 20)")
    args = parser.parse_args()
    block = cpu_vector_channels()
    aligns = [a for a in args.aligns if a != block]
    labels = [f"block {block}"] + [f"align {a}" for a in aligns]
    print(f"ort-cpu cut at the detected block ({block}) and at other alignments; ONNX Runtime "
          f"CPU, 1 thread, CPU time per run (lower quartile of {args.budget:g} s of "
          "alternated runs); speed: original / cut, FLOPs: original / cut")
    print(f"{'model':<20}{'pruning':>8}{'orig ms':>9}" +
          "".join(f"{label + ' ms':>15}{'speed':>7}{'FLOPs':>7}" for label in labels))
    for name in args.models:
        for pruning in args.prunings:
            original = targets.pruned_onnx(name, pruning, common.input_shape(name, None), 0)
            models = {"original": original}
            for label, align in zip(labels, [None, *aligns]):
                models[label] = channelcut.cut(original, target="ort-cpu", align=align,
                                               verify=False).model
            latency = guard.ort_latencies(models, feeds_for(original), budget=args.budget)
            flops = common.onnx_flops(original)
            line = f"{name:<20}{pruning:>8}{latency['original'] * 1e3:>9.2f}"
            for label in labels:
                line += (f"{latency[label] * 1e3:>15.2f}"
                         f"{'x%.2f' % (latency['original'] / latency[label]):>7}"
                         f"{'x%.2f' % (flops / common.onnx_flops(models[label])):>7}")
            print(line, flush=True)


if __name__ == "__main__":
    main()
