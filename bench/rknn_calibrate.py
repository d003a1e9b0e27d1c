"""Calibrate the `rknn` target on the vendor's compiler: which rewrite forms it runs on the NPU and
at what cost, and how its cycle estimate steps with channel counts.

Run with the RKNN venv's python (bench/rknn_env.sh makes it); about 2 minutes on 2 cores:

    /work/rknn-venv/bin/python bench/rknn_calibrate.py [--only forms,align,concat,concat_last,pad]
        [--target rk3588] [--json FILE]

Every micro model is written with onnx.helper, checked in ONNX Runtime against its reference form
(exact up to float rounding, except "slice", the cost floor that drops the constant channels), and
built by rknn_build.measure; the tables print as markdown. Sections:

  forms   one edge A(conv 16->32 3x3, relu) -> B(conv 32->32 3x3, pad 1) whose 8 interleaved
          channels are constants, in each way a fold or reinsertion can be written (today's
          border map and Pad/Gather/Add, a carrier channel, Concat of a constant, a one-hot Conv,
          a bias Add), plus the same for a residual Add
  align   A(conv 16->c) -> B(conv c->32) for c = 8..64, fp16 and int8: per-layer cycles, and the
          channel blocks that reproduce the compiler's NPU cycles (ceil(Cout/bo) * ceil(Cin/bi) *
          Hout * Wout * kh * kw) and its DDR cycles per byte of feature map moved
  concat  Concat of c1 + 16 channels read by a 1x1 conv: does the Concat stay one op?
  concat_last  Concat of c1 + c2 channels, the LAST input unaligned or not: what the .rknn
          holds beyond its weights (the compiler copies a Concat whose last input is unaligned)
  pad     a channel Pad from c channels: NPU or CPU?

and last, how many fp16 conv layers of the run npu_cycles_fp16 (the compiler's NPU cycles in
closed form) reproduces exactly. Import npu_cycles_fp16 for a cost model.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rknn_build import measure  # noqa: E402

H = 56  # feature map side of every micro model
C = 32
RNG = np.random.default_rng(0)


# ------------------------------------------------------------------------------ building blocks

def _model(nodes: list[onnx.NodeProto], inits: dict[str, np.ndarray], in_c: int,
           out_c: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "micro", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, in_c, H, H])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, out_c, H, H])],
        [numpy_helper.from_array(np.asarray(a), name) for name, a in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _conv(x: str, w: str, b: str | None, out: str, pad: int = 1) -> onnx.NodeProto:
    return helper.make_node("Conv", [x, w] + ([b] if b else []), [out], pads=[pad] * 4)


def _node(op: str, inputs: list[str], out: str, **attrs: Any) -> onnx.NodeProto:
    return helper.make_node(op, inputs, [out], **attrs)


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _build(model: onnx.ModelProto, scratch: Path, name: str, *flags: str) -> dict[str, Any]:
    path = scratch / f"{name}.onnx"
    onnx.save(model, str(path))
    return measure(path, *flags)


def _layers(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in result.get("rows", []) if r["op"] not in ("InputOperator",
                                                                 "OutputOperator")]


# ------------------------------------------------------------------------------ forms

def form_models() -> dict[str, tuple[onnx.ModelProto, str, str]]:
    """name -> (model, reference form it must match, what it is)."""
    const = np.arange(0, C, 4)  # 8 constant channels, interleaved
    kept = np.setdiff1d(np.arange(C), const)
    wa = RNG.standard_normal((C, 16, 3, 3)).astype(np.float32) * 0.2
    ba = RNG.standard_normal(C).astype(np.float32)
    wa[const], ba[const] = 0, np.abs(ba[const]) + 0.5
    v = ba[const]  # relu(b) of the zero filters
    wb = RNG.standard_normal((C, C, 3, 3)).astype(np.float32) * 0.1
    bb = RNG.standard_normal(C).astype(np.float32)
    perm = np.concatenate([kept, const])  # kept first, constants at the end
    order = np.empty(C, np.int64)
    order[kept], order[const] = np.arange(kept.size), kept.size + np.arange(const.size)
    pads = np.zeros(8, np.int64)
    pads[5] = const.size
    c_full = np.zeros((1, C, 1, 1), np.float32)
    c_full[0, const, 0, 0] = v
    c_end = np.zeros((1, C, 1, 1), np.float32)
    c_end[0, kept.size:, 0, 0] = v

    def head(rows: np.ndarray) -> tuple[list[onnx.NodeProto], dict[str, np.ndarray]]:
        return ([_conv("x", "wa", "ba", "a"), _node("Relu", ["a"], "r")],
                {"wa": wa[rows], "ba": ba[rows]})

    def chain(rows: np.ndarray, middle: list[onnx.NodeProto], tail_in: str, weights: np.ndarray,
              extra: dict[str, np.ndarray], pad: int = 1) -> onnx.ModelProto:
        nodes, inits = head(rows)
        return _model(nodes + middle + [_conv(tail_in, "wb", "bb", "out", pad)],
                      {**inits, **extra, "wb": weights, "bb": bb}, 16, C)

    everything = np.arange(C)
    border = np.einsum("ockl,c->okl", wb[:, const], v)[:, None].astype(np.float32)
    carrier = np.sort(np.append(kept, const[0]))
    wb_carrier = wb[:, carrier].copy()
    wb_carrier[:, np.flatnonzero(carrier == const[0])[0]] = np.einsum(
        "ockl,c->okl", wb[:, const], v / v[0])
    w11 = wb[:, :, 1:2, 1:2].copy()
    delta = np.einsum("oc,c->o", w11[:, const, 0, 0], v).astype(np.float32)
    models: dict[str, tuple[onnx.ModelProto, str, str]] = {
        "orig": (chain(everything, [], "r", wb, {}), "orig", "keep the constant channels"),
        "slice": (chain(kept, [], "r", wb[:, kept], {}), "-",
                  "drop them (inexact: the cost floor)"),
        "carrier": (chain(carrier, [], "r", wb_carrier, {}), "orig",
                    "keep one constant channel, fold the others into its column of B"),
        "pad_add_perm": (chain(kept, [_node("Pad", ["r", "pads"], "p"),
                                      _node("Add", ["p", "c_end"], "f")], "f", wb[:, perm],
                               {"pads": pads, "c_end": c_end}), "orig",
                         "Pad at the end + Add(1,C,1,1), B's columns permuted"),
        "pad_gather_add": (chain(kept, [_node("Pad", ["r", "pads"], "p"),
                                        _node("Gather", ["p", "order"], "g", axis=1),
                                        _node("Add", ["g", "c_full"], "f")], "f", wb,
                                 {"pads": pads, "order": order, "c_full": c_full}), "orig",
                           "today's reinsertion: Pad + Gather + Add"),
        "concat_const": (chain(kept, [_node("Concat", ["r", "cst"], "f", axis=1)], "f",
                               wb[:, perm], {"cst": np.broadcast_to(
                                   v.reshape(1, -1, 1, 1), (1, v.size, H, H)).copy()}), "orig",
                         "Concat of a (1,8,H,W) constant, B permuted"),
        "concat_expand": (chain(kept, [_node("Expand", ["c8", "shape8"], "e"),
                                       _node("Concat", ["r", "e"], "f", axis=1)], "f",
                                wb[:, perm], {"c8": v.reshape(1, -1, 1, 1),
                                              "shape8": np.array([1, v.size, H, H])}), "orig",
                          "Concat of Expand((1,8,1,1)), B permuted"),
    }
    onehot = np.zeros((C, kept.size, 1, 1), np.float32)
    onehot[kept, np.arange(kept.size), 0, 0] = 1
    models["onehot_conv"] = (chain(kept, [_conv("r", "onehot", "c_bias", "f", pad=0)], "f", wb,
                                   {"onehot": onehot, "c_bias": c_full.ravel()}), "orig",
                             "reinsertion as one 1x1 Conv: one-hot weights, constants as bias")
    nodes, inits = head(kept)
    models["border_map"] = (_model(nodes + [
        _conv("r", "wb", "bb", "y"),
        helper.make_node("ConstantOfShape", ["shape1"], ["ones"],
                         value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
        _conv("ones", "border", None, "map"), _node("Add", ["y", "map"], "out")],
        {**inits, "wb": wb[:, kept], "bb": bb, "shape1": np.array([1, 1, H, H]),
         "border": border}, 16, C), "orig", "today's border fold: ConstantOfShape -> Conv -> Add")
    models["orig_1x1"] = (chain(everything, [], "r", w11, {}, pad=0), "orig_1x1",
                          "unpadded 1x1 reader, constant channels kept")
    models["bias_fold"] = (_model(head(kept)[0] + [_conv("r", "w11", "b", "out", pad=0)],
                                  {**head(kept)[1], "w11": w11[:, kept], "b": bb + delta}, 16, C),
                           "orig_1x1", "constants folded into the 1x1 reader's bias")
    models["bias_add"] = (_model(head(kept)[0] + [_conv("r", "w11", "bb", "y", pad=0),
                                                  _node("Add", ["y", "delta"], "out")],
                                 {**head(kept)[1], "w11": w11[:, kept], "bb": bb,
                                  "delta": delta.reshape(1, C, 1, 1)}, 16, C),
                          "orig_1x1", "constants as an Add(1,C,1,1) after the reader")
    # residual: s = conv1x1(x) + x, the conv's constant rows cut and put back
    w1 = RNG.standard_normal((C, C, 1, 1)).astype(np.float32) * 0.2
    b1 = RNG.standard_normal(C).astype(np.float32)
    w1[const], b1[const] = 0, np.abs(b1[const]) + 0.5
    c1 = np.zeros((1, C, 1, 1), np.float32)
    c1[0, const, 0, 0] = b1[const]

    def residual(middle: list[onnx.NodeProto], extra: dict[str, np.ndarray], rows: np.ndarray
                 ) -> onnx.ModelProto:
        return _model([_conv("x", "w1", "b1", "a", pad=0), *middle,
                       _node("Add", [middle[-1].output[0] if middle else "a", "x"], "s"),
                       _conv("s", "wb", "bb", "out")],
                      {"w1": w1[rows], "b1": b1[rows], **extra, "wb": wb, "bb": bb}, C, C)

    models["res_orig"] = (residual([], {}, everything), "res_orig", "residual, uncut")
    models["res_pad_gather_add"] = (residual(
        [_node("Pad", ["a", "pads"], "p"), _node("Gather", ["p", "order"], "g", axis=1),
         _node("Add", ["g", "c1"], "f")], {"pads": pads, "order": order, "c1": c1}, kept),
        "res_orig", "residual, today's reinsertion")
    models["res_onehot_conv"] = (residual([_conv("a", "onehot", "c1b", "f", pad=0)],
                                          {"onehot": onehot, "c1b": c1.ravel()}, kept),
                                 "res_orig", "residual, reinsertion as a one-hot 1x1 Conv")
    return models


def section_forms(scratch: Path, target: str) -> list[dict[str, Any]]:
    models = form_models()
    x16 = RNG.standard_normal((1, 16, H, H)).astype(np.float32)
    x32 = RNG.standard_normal((1, C, H, H)).astype(np.float32)
    found = []
    print("\n## forms (fp16)\n")
    print("| form | what | rel. error vs its reference (ORT) | .rknn bytes | cycles | layers "
          "| CPU ops | compiled op types | simulator cosine |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (model, ref, what) in models.items():
        x = x32 if name.startswith("res") else x16
        error = "-" if ref == "-" else \
            f"{np.abs(_run(model, x) - _run(models[ref][0], x)).max() / np.abs(_run(models[ref][0], x)).max():.1e}"
        r = _build(model, scratch, name, "--target", target, "--simulate")
        found.append({"form": name, "what": what, **r})
        if "error" in r:
            print(f"| {name} | {what} | {error} | build fails: {r.get('log_tail', [''])[-2][:80]} "
                  "| | | | | |")
            continue
        cos = min(c for c in r["cosine"] if c is not None) if r.get("cosine") else float("nan")
        print(f"| {name} | {what} | {error} | {r['rknn_bytes']} | {r['cycles']} | {r['layers']} "
              f"| {r['cpu_ops_unknown']} | {r['op_types']} | {cos:.7f} |")
    return found


# ------------------------------------------------------------------------------ alignment

def _pair(c: int) -> onnx.ModelProto:
    return _model([_conv("x", "wa", None, "a"), _node("Relu", ["a"], "r"),
                   _conv("r", "wb", None, "out")],
                  {"wa": RNG.standard_normal((c, 16, 3, 3)).astype(np.float32),
                   "wb": RNG.standard_normal((32, c, 3, 3)).astype(np.float32)}, 16, 32)


def _fit_blocks(convs: list[tuple[int, int, int, int]]) -> dict[str, int] | None:
    """(cout, cin, hw_k2, npu cycles) -> the channel blocks that reproduce every figure."""
    for bo in (8, 16, 32, 64):
        for bi in (8, 16, 32, 64):
            if all(math.ceil(co / bo) * math.ceil(ci / bi) * hwk == npu
                   for co, ci, hwk, npu in convs):
                return {"out_block": bo, "in_block": bi}
    return None


def section_align(scratch: Path, target: str, channels: list[int]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    print("\n## alignment: A conv 16->c 3x3, B conv c->32 3x3, 56x56 (per-layer Total cycles)\n")
    print("| c | " + " | ".join(f"{d} A | {d} B | {d} .rknn bytes" for d in ("fp16", "int8"))
          + " |")
    print("|---|" + "---|" * 6)
    convs: dict[str, list[tuple[int, int, int, int]]] = {"fp16": [], "int8": []}
    ddr: list[tuple[float, float]] = []
    for c in channels:
        cells = []
        for dtype, flags in (("fp16", ()), ("int8", ("--int8", "--calibration", "2"))):
            r = _build(_pair(c), scratch, f"align{c}_{dtype}", "--target", target, *flags)
            layers = _layers(r)
            found[f"{c}_{dtype}"] = r
            if "error" in r or len(layers) != 2:
                cells += ["error", "", ""]
                continue
            a, b = layers
            cells += [str(a["total"]), str(b["total"]), str(r["rknn_bytes"])]
            convs[dtype] += [(c, 16, H * H * 9, a["npu"]), (32, c, H * H * 9, b["npu"])]
            if dtype == "fp16":  # feature bytes moved: input + output maps, 2 bytes a value
                ddr += [((16 + c) * H * H * 2, a["ddr"]), ((c + 32) * H * H * 2, b["ddr"])]
        print(f"| {c} | " + " | ".join(cells) + " |")
    for dtype, rows in convs.items():
        blocks = _fit_blocks(rows)
        found[f"blocks_{dtype}"] = blocks
        print(f"\n{dtype}: NPU cycles = ceil(Cout/bo) * ceil(Cin/bi) * Hout*Wout*kh*kw with "
              f"{blocks if blocks else 'no single block size (see the table)'}")
    if ddr:
        moved, cycles = np.array(ddr).T
        per_cycle = float(moved.sum() / cycles.sum())
        found["ddr_bytes_per_cycle_fp16"] = per_cycle
        print(f"fp16: DDR cycles ~ feature bytes moved / {per_cycle:.1f} "
              f"(worst layer off by {np.max(np.abs(moved / per_cycle - cycles) / cycles):.0%}); "
              "a layer's Total is max(DDR, NPU)")
    return found


# ------------------------------------------------------------------------------ concat, pad

def section_concat(scratch: Path, target: str, widths: list[int]) -> dict[str, Any]:
    found = {}
    print("\n## Concat(c1 channels, 16 channels) -> 1x1 conv\n")
    print("| c1 | fp16 cycles | fp16 op types | int8 cycles | int8 op types |")
    print("|---|---|---|---|---|")
    for c1 in widths:
        model = _model([_conv("x", "w1", None, "a"), _node("Relu", ["a"], "ra"),
                        _conv("x", "w2", None, "b"), _node("Relu", ["b"], "rb"),
                        _node("Concat", ["ra", "rb"], "c", axis=1),
                        _conv("c", "wc", None, "out", pad=0)],
                       {"w1": RNG.standard_normal((c1, 16, 3, 3)).astype(np.float32),
                        "w2": RNG.standard_normal((16, 16, 3, 3)).astype(np.float32),
                        "wc": RNG.standard_normal((32, c1 + 16, 1, 1)).astype(np.float32)},
                       16, 32)
        cells = []
        for dtype, flags in (("fp16", ()), ("int8", ("--int8", "--calibration", "2"))):
            r = _build(model, scratch, f"concat{c1}_{dtype}", "--target", target, *flags)
            found[f"{c1}_{dtype}"] = r
            cells += [str(r.get("cycles")), str(r.get("op_types"))]
        print(f"| {c1} | " + " | ".join(cells) + " |")
    return found


def section_concat_last(scratch: Path, target: str, firsts: list[int], lasts: list[int],
                        producer_cin: int = 16) -> dict[str, Any]:
    """Concat(c1 aligned channels, c2) -> 1x1 conv, the last input c2 unaligned or not; its
    producer reads `producer_cin` channels (3x3): what the .rknn holds beyond the weights."""
    found = {}
    print(f"\n## Concat(c1 channels, c2 channels: the LAST input) -> 1x1 conv (c2's producer: "
          f"{producer_cin} -> c2, 3x3), fp16\n")
    print("| c1 | c2 | .rknn bytes | weight KiB | bytes beyond the weights | internal KiB | "
          "cycles | op types |")
    print("|---|---|---|---|---|---|---|---|")
    for c1 in firsts:
        for c2 in lasts:
            model = _model(([_conv("x", "wx", None, "xp", pad=0)] if producer_cin != 16 else [])
                           + [_conv("x", "w1", None, "a"), _node("Relu", ["a"], "ra"),
                            _conv("xp" if producer_cin != 16 else "x", "w2", None, "b"),
                            _node("Relu", ["b"], "rb"),
                            _node("Concat", ["ra", "rb"], "c", axis=1),
                              _conv("c", "wc", None, "out", pad=0)],
                           {"w1": RNG.standard_normal((c1, 16, 3, 3)).astype(np.float32),
                            "w2": RNG.standard_normal((c2, producer_cin, 3, 3)).astype(
                                np.float32),
                            "wc": RNG.standard_normal((32, c1 + c2, 1, 1)).astype(np.float32),
                            **({"wx": RNG.standard_normal((producer_cin, 16, 1, 1)).astype(
                                np.float32)} if producer_cin != 16 else {})}, 16, 32)
            r = _build(model, scratch, f"concatlast{c1}_{c2}_{producer_cin}", "--target", target)
            found[f"{c1}_{c2}_{producer_cin}"] = r
            weights = r.get("weight_kib")
            beyond = r["rknn_bytes"] - weights * 1024 if weights is not None and r.get(
                "rknn_bytes") else None
            print(f"| {c1} | {c2} | {r.get('rknn_bytes')} | {weights} | "
                  f"{beyond if beyond is None else round(beyond)} | {r.get('internal_kib')} | "
                  f"{r.get('cycles')} | {r.get('op_types')} |")
    return found


def section_pad(scratch: Path, target: str, widths: list[int]) -> dict[str, Any]:
    """A Pad feeding a Conv directly crashes the toolkit's pad-into-conv fusion, so an Add sits
    between them (as in a reinsertion)."""
    found = {}
    print("\n## channel Pad (+8 channels at the end) from c channels: where it runs\n")
    print("| c | fp16 | int8 |")
    print("|---|---|---|")
    for c in widths:
        pads = np.zeros(8, np.int64)
        pads[5] = 8
        model = _model([_conv("x", "w", None, "a"), _node("Relu", ["a"], "r"),
                        _node("Pad", ["r", "pads"], "p"), _node("Add", ["p", "k"], "f"),
                        _conv("f", "wb", None, "out")],
                       {"w": RNG.standard_normal((c, 16, 3, 3)).astype(np.float32),
                        "pads": pads, "k": np.ones((1, c + 8, 1, 1), np.float32),
                        "wb": RNG.standard_normal((32, c + 8, 3, 3)).astype(np.float32)}, 16, 32)
        cells = []
        for dtype, flags in (("fp16", ()), ("int8", ("--int8", "--calibration", "2"))):
            r = _build(model, scratch, f"pad{c}_{dtype}", "--target", target, *flags)
            found[f"{c}_{dtype}"] = r
            where = [row["target"] for row in _layers(r) if row["op"] == "Pad"]
            cells.append(",".join(where) if where else r.get("error", "no Pad layer"))
        print(f"| {c} | " + " | ".join(cells) + " |")
    return found


_SHAPES = re.compile(r"\((\d+),(\d+),(\d+),(\d+)\),\((\d+),(\d+),(\d+),(\d+)\)")
_OUT = re.compile(r"\((\d+),(\d+),(\d+),(\d+)\)")


def npu_cycles_fp16(cin: int, cout: int, depthwise: bool, kh: int, kw: int, hout: int,
                    wout: int) -> int:
    """The rk3588 fp16 compiler's NPU cycles for one conv layer, as its layer table states them:
    output channels in blocks of 16, input channels in blocks of 32 (64 for depthwise), at least 2
    (input block x kernel tap) steps, output pixels in blocks of 16. Exact on every fp16 conv layer
    of the lab's builds (demo, resnet18, mobilenet_v2, every cut variant: ~1500 layers)."""
    pixels = -(-hout * wout // 16) * 16
    if depthwise:
        return math.ceil(cin / 64) * pixels * kh * kw
    return math.ceil(cout / 16) * max(math.ceil(cin / 32) * kh * kw, 2) * pixels


def check_npu_formula(results: list[dict[str, Any]]) -> tuple[int, list[str]]:
    """Conv rows of fp16 builds whose NPU cycles npu_cycles_fp16 reproduces, and the misses."""
    exact, misses = 0, []
    for result in results:
        if result.get("dtype") != "fp16":
            continue
        for row in _layers(result):
            weights = _SHAPES.match(row["shapes"][0]) if row["shapes"] else None
            out = _OUT.match(row["shapes"][1]) if len(row["shapes"]) > 1 else None
            if not row["op"].startswith("Conv") or not weights or not out:
                continue
            _, cin, _, _, cout, cin_w, kh, kw = map(int, weights.groups())
            hout, wout = map(int, out.groups()[2:])
            # RKNN writes a depthwise weight as (1, C, kh, kw)
            depthwise = cout == 1 and cin_w == cin
            want = npu_cycles_fp16(cin, cin if depthwise else cout, depthwise, kh, kw, hout, wout)
            if want == row["npu"]:
                exact += 1
            else:
                misses.append(f"{row['name']} {row['shapes'][:2]}: {row['npu']} vs {want}")
    return exact, misses


def section_formula(results: dict[str, Any]) -> None:
    builds = [r for found in results.values()
              for r in (found if isinstance(found, list) else found.values())
              if isinstance(r, dict) and "rows" in r]
    exact, misses = check_npu_formula(builds)
    print(f"\n## NPU cycle formula (npu_cycles_fp16) on this run's fp16 conv layers: "
          f"{exact} exact, {len(misses)} off\n")
    for miss in misses[:10]:
        print(f"- {miss}")


SECTIONS: dict[str, Callable[[Path, str], Any]] = {
    "forms": section_forms,
    "align": lambda s, t: section_align(s, t, [8, 9, 16, 17, 24, 32, 33, 48, 64]),
    "concat": lambda s, t: section_concat(s, t, [8, 9, 13, 16, 20, 24]),
    "concat_last": lambda s, t: (section_concat_last(s, t, [16, 64, 128], [9, 16])
                                 | section_concat_last(s, t, [16], [9, 16], producer_cin=256)),
    "pad": lambda s, t: section_pad(s, t, [12, 16, 20, 24, 25, 32]),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"sections, comma-separated (default: {','.join(SECTIONS)})")
    parser.add_argument("--target", default="rk3588")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    args = parser.parse_args(argv)
    chosen = [s for s in args.only.split(",") if s]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        print(f"rknn_calibrate: unknown section {unknown[0]!r}; choose from "
              f"{', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    results = {}
    with tempfile.TemporaryDirectory(prefix="rknn_calibrate_") as scratch:
        for name in chosen:
            results[name] = SECTIONS[name](Path(scratch), args.target)
    section_formula(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
