"""LLaMA-style decoder pieces as ONNX nodes, as exporters write them: RMSNorm from Pow,
ReduceMean, Add, Sqrt, Div and Mul; multi-head attention with q, k, v and o MatMuls, Reshape to
heads and Transposes; the SwiGLU MLP. tests/test_attention.py builds one layer from them,
bench/llm_scale.py (which loads this file by path) a stack of layers at any size.

Every function returns a list of NodeProtos reading and writing the names it is given; the
constants they read are named by the caller (the same names may serve every layer)."""

from __future__ import annotations

import onnx
from onnx import helper


def _node(op_type: str, inputs: list[str], outputs: list[str], **attrs) -> onnx.NodeProto:
    return helper.make_node(op_type, inputs, outputs, name=f"{op_type.lower()}_{outputs[0]}",
                            **attrs)


def rms_norm(x: str, y: str, gain: str, two: str = "two", axes: str = "last",
             eps: str = "eps") -> list[onnx.NodeProto]:
    """y = x / sqrt(mean(x^2, last axis) + eps) * gain."""
    return [_node("Pow", [x, two], [f"{y}_sq"]),
            _node("ReduceMean", [f"{y}_sq", axes], [f"{y}_ms"], keepdims=1),
            _node("Add", [f"{y}_ms", eps], [f"{y}_mse"]),
            _node("Sqrt", [f"{y}_mse"], [f"{y}_rms"]),
            _node("Div", [x, f"{y}_rms"], [f"{y}_n"]),
            _node("Mul", [f"{y}_n", gain], [y])]


def swiglu(x: str, y: str, wg: str, wu: str, wd: str) -> list[onnx.NodeProto]:
    """y = (silu(x @ wg) * (x @ wu)) @ wd: a hidden channel is dead when its gate or up column
    (or its down row) is zero."""
    p = y
    return [_node("MatMul", [x, wg], [f"{p}_g"]), _node("Sigmoid", [f"{p}_g"], [f"{p}_gs"]),
            _node("Mul", [f"{p}_g", f"{p}_gs"], [f"{p}_silu"]),
            _node("MatMul", [x, wu], [f"{p}_u"]),
            _node("Mul", [f"{p}_silu", f"{p}_u"], [f"{p}_gu"]),
            _node("MatMul", [f"{p}_gu", wd], [y])]


def attention(x: str, y: str, wq: str, wk: str, wv: str, wo: str, heads_shape: str,
              flat_shape: str, scale: str) -> list[onnx.NodeProto]:
    """y = o_proj(softmax(q k^T * scale) v), q, k and v reshaped by `heads_shape` (B, S, H, D)
    and transposed to (B, H, S, D); the context back to (B, S, H*D) by `flat_shape`."""
    p = y
    nodes = []
    for name, w in (("q", wq), ("k", wk), ("v", wv)):
        nodes += [_node("MatMul", [x, w], [f"{p}_{name}"]),
                  _node("Reshape", [f"{p}_{name}", heads_shape], [f"{p}_{name}4"]),
                  _node("Transpose", [f"{p}_{name}4"], [f"{p}_{name}h"], perm=[0, 2, 1, 3])]
    return nodes + [
        _node("Transpose", [f"{p}_kh"], [f"{p}_kT"], perm=[0, 1, 3, 2]),
        _node("MatMul", [f"{p}_qh", f"{p}_kT"], [f"{p}_scores"]),
        _node("Mul", [f"{p}_scores", scale], [f"{p}_scaled"]),
        _node("Softmax", [f"{p}_scaled"], [f"{p}_probs"], axis=-1),
        _node("MatMul", [f"{p}_probs", f"{p}_vh"], [f"{p}_ctx"]),
        _node("Transpose", [f"{p}_ctx"], [f"{p}_ctxt"], perm=[0, 2, 1, 3]),
        _node("Reshape", [f"{p}_ctxt", flat_shape], [f"{p}_ctx2"]),
        _node("MatMul", [f"{p}_ctx2", wo], [y])]
