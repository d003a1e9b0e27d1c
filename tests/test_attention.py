"""Attention heads as channels: after Reshape(B, S, H, D) a head is one channel of the head axis,
carried through the Transposes, the score and context MatMuls (the head axis is a batch axis of
both) and Softmax over keys, back to o_proj's input rows. A head whose v columns or o rows are
all zero goes from q, k, v and o together; a head with only zero q or k (uniform attention)
stays."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx

import llama
from builders import assert_cut, blockers, cut, initializer, model, node, rand, run, weights

B, S, E, D = 2, 5, 16, 4


def i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def head_cols(heads: Iterable[int], d: int = D) -> list[int]:
    """The columns (or rows) of heads `heads` in a (.., H*D) projection."""
    return [h * d + j for h in heads for j in range(d)]


def decoder(h: int = 4, h_kv: int | None = None, *, zero_v: Iterable[int] = (),
            zero_o: Iterable[int] = (), zero_q: Iterable[int] = (), zero_k: Iterable[int] = (),
            rotary: bool = False, fused: bool = False, dynamic: bool = False,
            unbind: str = "Gather", tails: tuple[tuple[int, ...], tuple[int, ...]] | None = None,
            shape_from: str = "x") -> onnx.ModelProto:
    """One LLaMA-style attention block: x (B, S, E) -> q, k, v projections -> heads -> (rotary)
    -> (GQA repeat of k, v) -> softmax(q k^T / sqrt(D) + causal mask) v -> o_proj -> + x.

    `zero_*`: heads zeroed in v's columns, o's rows, q's columns, k's columns (kv heads for k
    and v). `fused`: one qkv projection reshaped to (B, S, 3, H, D) (MHA only). `dynamic`: S is
    dynamic and the head Reshapes' targets are Concat(Shape(x)[:2], [H, D]) (MHA only)."""
    h_kv = h if h_kv is None else h_kv
    rep = h // h_kv
    wq = weights(E, h * D, zero_cols=head_cols(zero_q), seed=1)
    wk = weights(E, h_kv * D, zero_cols=head_cols(zero_k), seed=2)
    wv = weights(E, h_kv * D, zero_cols=head_cols(zero_v), seed=3)
    wo = weights(h * D, E, zero_rows=head_cols(zero_o), seed=4)
    mask = np.triu(np.full((S, S), -1e4, np.float32), 1).reshape(1, 1, S, S)
    inits = {"wo": wo, "scale": np.array(D ** -0.5, np.float32), "mask": mask,
             "shape_out": i64(B, S, h * D)}
    nodes = []
    if fused:
        inits["wqkv"] = np.concatenate([wq, wk, wv], axis=1)
        inits["shape_qkv"] = i64(B, S, 3, h, D)
        nodes += [node("MatMul", ["x", "wqkv"], ["qkv"]),
                  node("Reshape", ["qkv", "shape_qkv"], ["qkv5"]),
                  node("Transpose", ["qkv5"], ["qkvt"], perm=[2, 0, 3, 1, 4])]
        if unbind == "Split":  # torch's unbind as Split and Squeeze
            inits["ax0"] = i64(0)
            nodes.append(node("Split", ["qkvt"], ["qs", "ks", "vs"], axis=0, num_outputs=3))
            nodes += [node("Squeeze", [f"{name}s", "ax0"], [f"{name}h"]) for name in "qkv"]
        for i, name in enumerate("qkv" if unbind == "Gather" else ""):
            inits[f"i{name}"] = np.array(i, np.int64)
            nodes.append(node("Gather", ["qkvt", f"i{name}"], [f"{name}h"], axis=0))
    else:
        # one shape for q, k and v when they have as many heads (equal constants are shared)
        kv = "shape_q" if h_kv == h else "shape_kv"
        inits.update(wq=wq, wk=wk, wv=wv, shape_q=i64(B, S, h, D))
        inits[kv] = i64(B, S, h_kv, D)
        for name, shape in (("q", "shape_q"), ("k", kv), ("v", kv)):
            nodes += [node("MatMul", ["x", f"w{name}"], [name]),
                      node("Reshape", [name, shape], [f"{name}4"]),
                      node("Transpose", [f"{name}4"], [f"{name}h"], perm=[0, 2, 1, 3])]
    if rotary:
        angles = rand(S, D // 2, seed=9) * 3
        inits.update(cos=np.cos(np.concatenate([angles, angles], 1)),
                     sin=np.sin(np.concatenate([angles, angles], 1)),
                     lo=i64(0), mid=i64(D // 2), hi=i64(D), ax=i64(3))
        for name in "qk":
            x = f"{name}h"
            nodes += [node("Slice", [x, "lo", "mid", "ax"], [f"{name}1"]),
                      node("Slice", [x, "mid", "hi", "ax"], [f"{name}2"]),
                      node("Neg", [f"{name}2"], [f"{name}n"]),
                      node("Concat", [f"{name}n", f"{name}1"], [f"{name}rot"], axis=3),
                      node("Mul", [x, "cos"], [f"{name}c"]),
                      node("Mul", [f"{name}rot", "sin"], [f"{name}s"]),
                      node("Add", [f"{name}c", f"{name}s"], [f"{name}r"])]
        q, k = "qr", "kr"
    else:
        q, k = "qh", "kh"
    v = "vh"
    if rep > 1:  # HF repeat_kv: (B, Hkv, S, D) -> (B, Hkv, rep, S, D) -> (B, H, S, D)
        inits.update(ax2=i64(2), expand=i64(B, h_kv, rep, S, D), shape_rep=i64(B, h, S, D))
        for name in (k, v):
            nodes += [node("Unsqueeze", [name, "ax2"], [f"{name}u"]),
                      node("Expand", [f"{name}u", "expand"], [f"{name}e"]),
                      node("Reshape", [f"{name}e", "shape_rep"], [f"{name}x"])]
        k, v = f"{k}x", f"{v}x"
    nodes.append(node("Transpose", [k], ["kT"], perm=[0, 1, 3, 2]))
    nodes += [node("MatMul", [q, "kT"], ["scores"]),
              node("Mul", ["scores", "scale"], ["scaled"]),
              # a constant causal mask fixes S: a dynamic S goes unmasked
              node("Identity", ["scaled"], ["masked"]) if dynamic else
              node("Add", ["scaled", "mask"], ["masked"]),
              node("Softmax", ["masked"], ["probs"], axis=-1),
              node("MatMul", ["probs", v], ["ctx"]),
              node("Transpose", ["ctx"], ["ctxt"], perm=[0, 2, 1, 3]),
              node("Reshape", ["ctxt", "shape_out"], ["ctx2"]),
              node("MatMul", ["ctx2", "wo"], ["o"]),
              node("Add", ["o", "x"], ["y"])]
    if dynamic:  # the exporters' (*x.shape[:-1], H, D): sizes from Shape, heads constant
        shapes = {"shape_q": i64(h, D), "shape_out": i64(h * D)}
        if tails is not None:  # other constant tails, such as (-1, D) and (-1,)
            shapes = {"shape_q": i64(*tails[0]), "shape_out": i64(*tails[1])}
        nodes = [node("Shape", [shape_from], ["bs"], end=2),
                 *[node("Concat", ["bs", f"{name}_tail"], [name], axis=0) for name in shapes],
                 *nodes]
        del inits["mask"]
        for name, tail in shapes.items():
            del inits[name]
            inits[f"{name}_tail"] = tail
        if rep > 1:  # repeat_kv's sizes: (B, Hkv, rep, S, D) and (B, H, S, D)
            del inits["shape_kv"], inits["expand"], inits["shape_rep"]
            inits.update(kv_tail=i64(h_kv, D), hr=i64(h_kv, rep), hq=i64(h), d=i64(D),
                         one=i64(1), two_=i64(2))
            nodes = [nodes[0],  # the Shape
                     node("Slice", ["bs", "zero_", "one"], ["b"]),
                     node("Slice", ["bs", "one", "two_"], ["s"]),
                     node("Concat", ["bs", "kv_tail"], ["shape_kv"], axis=0),
                     node("Concat", ["b", "hr", "s", "d"], ["expand"], axis=0),
                     node("Concat", ["b", "hq", "s", "d"], ["shape_rep"], axis=0), *nodes[1:]]
            inits["zero_"] = i64(0)
    inputs = {"x": [B, "S" if dynamic else S, E]}
    if shape_from != "x":
        inputs[shape_from] = [B, "S", E]
    return model(nodes, inputs=inputs, outputs=["y"], inits=inits)


def test_dead_heads_by_v_go_from_q_k_v_and_o():
    m = decoder(4, zero_v=[1, 3])
    result = assert_cut(m, {"matmul_q": (E, 8), "matmul_k": (E, 8), "matmul_v": (E, 8),
                            "matmul_o": (8, E)}, groups=2)
    assert list(initializer(result.model, "shape_q")) == [B, S, 2, D]
    assert list(initializer(result.model, "shape_out")) == [B, S, 2 * D]


def test_dead_heads_by_o_rows_go_from_q_k_v_and_o():
    m = decoder(4, zero_o=[2])
    assert_cut(m, {"matmul_q": (E, 12), "matmul_k": (E, 12), "matmul_v": (E, 12),
                   "matmul_o": (12, E)}, groups=1)


def test_heads_with_only_zero_q_or_k_attend_uniformly_and_stay():
    result = assert_cut(decoder(4, zero_q=[0], zero_k=[2]), {})
    assert not blockers(result, "Transpose") and not blockers(result, "MatMul")


def test_a_zero_column_inside_a_live_head_stays():
    m = decoder(4, zero_v=[1])
    wv = initializer(m, "wv").copy()
    wv[:, 2] = 0  # head 0, column 2: the head lives on
    m.graph.initializer.remove(next(t for t in m.graph.initializer if t.name == "wv"))
    m.graph.initializer.append(onnx.numpy_helper.from_array(wv, "wv"))
    assert_cut(m, {"matmul_q": (E, 12), "matmul_k": (E, 12), "matmul_v": (E, 12),
                   "matmul_o": (12, E)}, groups=1)


def test_rotary_heads_go_whole():
    assert_cut(decoder(4, zero_v=[0], rotary=True),
               {"matmul_q": (E, 12), "matmul_k": (E, 12), "matmul_v": (E, 12),
                "matmul_o": (12, E)}, groups=1)


def test_fused_qkv_heads_go_from_the_packed_projection():
    result = assert_cut(decoder(4, zero_v=[1, 2], fused=True),
                        {"matmul_qkv": (E, 3 * 8), "matmul_o": (8, E)}, groups=2)
    assert list(initializer(result.model, "shape_qkv")) == [B, S, 3, 2, D]


def test_fused_qkv_picked_apart_by_split():
    assert_cut(decoder(4, zero_v=[3], fused=True, unbind="Split"),
               {"matmul_qkv": (E, 3 * 12), "matmul_o": (12, E)}, groups=1)


def test_fused_qkv_zero_q_head_stays():
    assert_cut(decoder(4, zero_q=[1], fused=True), {})


def test_gqa_kv_head_goes_with_all_its_q_heads():
    # 4 q heads share 2 kv heads (q heads 0, 1 read kv head 0): zero v of kv head 1 kills
    # q heads 2 and 3
    result = assert_cut(decoder(4, 2, zero_v=[1]),
                        {"matmul_q": (E, 8), "matmul_k": (E, 4), "matmul_v": (E, 4),
                         "matmul_o": (8, E)}, groups=1)
    assert list(initializer(result.model, "expand")) == [B, 1, 2, S, D]
    assert list(initializer(result.model, "shape_rep")) == [B, 2, S, D]


def test_gqa_q_head_dead_by_o_alone_keeps_its_shared_kv_head():
    assert_cut(decoder(4, 2, zero_o=[1]), {})


def test_gqa_rotary_both_kv_heads_dead_by_o():
    assert_cut(decoder(4, 2, zero_o=[0, 1], rotary=True),
               {"matmul_q": (E, 8), "matmul_k": (E, 4), "matmul_v": (E, 4),
                "matmul_o": (8, E)}, groups=1)


def assert_dynamic_cut(m: onnx.ModelProto, kept: dict[str, tuple[int, int]], **options):
    """Cut a dynamic-S decoder analysed at S = 7 (`assert_cut`), and check it at S = 3 too:
    the computed shapes must hold at another sequence length than the analysed one."""
    result = assert_cut(m, kept, input_shapes={"x": [B, 7, E]}, **options)
    feeds = {"x": rand(B, 3, E, seed=5)}
    np.testing.assert_allclose(run(result.model, feeds)["y"], run(m, feeds)["y"],
                               rtol=1e-4, atol=1e-5)
    return result


ONE_HEAD_OF_4 = {"matmul_q": (E, 12), "matmul_k": (E, 12), "matmul_v": (E, 12),
                 "matmul_o": (12, E)}


def test_dynamic_sequence_length_heads_count_rewritten_in_the_computed_shape():
    result = assert_dynamic_cut(decoder(4, zero_v=[2], dynamic=True), ONE_HEAD_OF_4, groups=1)
    assert list(initializer(result.model, "shape_q_tail")) == [3, D]
    assert list(initializer(result.model, "shape_out_tail")) == [3 * D]


def test_computed_shape_with_inferred_head_count():
    # HF's (*x.shape[:-1], -1, D) and (*x.shape[:-1], -1): the sizes before the heads are
    # proven to be q's own (q = x @ Wq keeps x's first dims), so -1 is the head count
    assert_dynamic_cut(decoder(4, zero_v=[2], dynamic=True, tails=((-1, D), (-1,))),
                       ONE_HEAD_OF_4, groups=1)


def test_gqa_with_dynamic_sequence_length():
    assert_dynamic_cut(decoder(4, 2, zero_v=[0], dynamic=True),
                       {"matmul_q": (E, 8), "matmul_k": (E, 4), "matmul_v": (E, 4),
                        "matmul_o": (8, E)}, groups=1)


def test_flops_after_a_dynamic_sequence_cut_are_counted_at_the_analysed_length():
    # the cut model, analysed at the same S, counts what the first cut said it would: the
    # declared input (S symbolic) once left the projections uncounted (a number 60% low)
    for mode in ("zero", "full"):
        result = assert_dynamic_cut(decoder(4, zero_v=[2], dynamic=True), ONE_HEAD_OF_4,
                                    groups=1, mode=mode)
        again = cut(result.model, mode, input_shapes={"x": [B, 7, E]}).report
        assert result.report.flops_unknown_after == again.flops_unknown_before == 0
        assert result.report.flops_after == again.flops_before
        assert 0.7 * result.report.flops_before < result.report.flops_after \
            < result.report.flops_before


def test_inferred_head_count_from_another_tensors_shape_is_a_named_barrier():
    # the sizes come from another input's Shape: nothing says they are q's, so -1 need not be
    # the head count at another size; the heads stay, and the report says which Reshape
    m = decoder(4, zero_v=[2], dynamic=True, tails=((-1, D), (-1,)), shape_from="other")
    result = assert_cut(m, {}, input_shapes={"x": [B, 7, E], "other": [B, 7, E]})
    reasons = {b.reason for b in blockers(result, "Reshape")}
    assert reasons == {"Reshape to a computed shape whose sizes from the channel axis on are "
                       "not all constants"}


# --- torch: nn.MultiheadAttention (packed in-projection), as torchvision's ViT exports it --------

class _ViTBlock:
    """torchvision's EncoderBlock in miniature: LayerNorm, self-attention, residual, MLP."""

    @staticmethod
    def build(torch, e: int, heads: int):
        class Block(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.ln_1 = torch.nn.LayerNorm(e)
                self.self_attention = torch.nn.MultiheadAttention(e, heads, batch_first=True)
                self.ln_2 = torch.nn.LayerNorm(e)
                self.mlp = torch.nn.Sequential(torch.nn.Linear(e, 2 * e), torch.nn.GELU(),
                                               torch.nn.Linear(2 * e, e))

            def forward(self, x):
                y = self.ln_1(x)
                y = self.self_attention(y, y, y, need_weights=False)[0] + x
                return self.mlp(self.ln_2(y)) + y

        torch.manual_seed(0)
        return Block().eval()


def vit_block(zero_v: Iterable[int] = (), zero_o: Iterable[int] = (), zero_q: Iterable[int] = (),
              heads: int = 4) -> onnx.ModelProto:
    """The block exported from torch (batch 1, 5 tokens of E), with heads zeroed in the packed
    in-projection's v (or q) part, or in out_proj's input columns."""
    import pytest
    torch = pytest.importorskip("torch")
    from channelcut.pytorch import to_onnx
    block = _ViTBlock.build(torch, E, heads)
    d = E // heads
    with torch.no_grad():
        attn = block.self_attention
        for h in zero_q:
            attn.in_proj_weight[h * d:(h + 1) * d] = 0
            attn.in_proj_bias[h * d:(h + 1) * d] = 0
        for h in zero_v:
            attn.in_proj_weight[2 * E + h * d:2 * E + (h + 1) * d] = 0
            attn.in_proj_bias[2 * E + h * d:2 * E + (h + 1) * d] = 0
        for h in zero_o:
            attn.out_proj.weight[:, h * d:(h + 1) * d] = 0
    return to_onnx(block, [(1, S, E)])


def reader_of(m: onnx.ModelProto, shape: tuple[int, ...]) -> str:
    """The node that reads the one initializer of this shape (exporters name nodes their way)."""
    name = next(t.name for t in m.graph.initializer if tuple(t.dims) == shape)
    return next(n.name for n in m.graph.node if name in n.input)


def test_torch_multihead_attention_dead_heads_go():
    m = vit_block(zero_v=[0], zero_o=[3])
    in_proj, out_proj = reader_of(m, (E, 3 * E)), reader_of(m, (E, E))
    result = assert_cut(m, {in_proj: (E, 3 * 8), out_proj: (8, E)}, groups=2)
    assert not blockers(result, "Transpose") and not blockers(result, "MatMul")


def test_torch_multihead_attention_full_cut_counts_heads_not_channels():
    # in the full cut the packed projection's bias Add may reinsert constants, so its operand
    # channels are groups of their own; where they go with their heads, they are one unit
    m = vit_block(zero_v=[0], zero_o=[3])
    in_proj, out_proj = reader_of(m, (E, 3 * E)), reader_of(m, (E, E))
    kept = {in_proj: (E, 3 * 8), out_proj: (8, E)}
    zero, full = (assert_cut(m, kept, groups=2, mode=mode).report for mode in ("zero", "full"))
    assert full.removed_channels == zero.removed_channels


def test_torch_multihead_attention_zero_q_head_stays():
    assert_cut(vit_block(zero_q=[2]), {})


def test_heads_and_swiglu_mlp_channels_cut_in_one_layer():
    """A whole LLaMA layer: RMSNorm, attention with dead heads, RMSNorm, SwiGLU MLP with dead
    hidden channels: heads go as units, MLP channels one by one."""
    attention = decoder(4, zero_v=[0])
    hidden = 24
    nodes = list(attention.graph.node)
    for n in nodes:  # the attention reads the normed input, the residual the raw one
        n.input[:] = ["xn" if i == "x" and n.op_type == "MatMul" else i for i in n.input]
    nodes = llama.rms_norm("x", "xn", "xn_g") + nodes + llama.rms_norm("y", "yn", "yn_g") + \
        llama.swiglu("yn", "d", "wg", "wu", "wd") + [node("Add", ["y", "d"], ["z"])]
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in attention.graph.initializer}
    inits.update(two=np.array(2, np.float32), last=i64(-1), eps=np.array(1e-6, np.float32),
                 xn_g=rand(E, seed=11), yn_g=rand(E, seed=12),
                 wg=weights(E, hidden, zero_cols=[1, 7, 9], seed=13),
                 wu=weights(E, hidden, seed=14), wd=weights(hidden, E, seed=15))
    m = model(nodes, inputs={"x": [B, S, E]}, outputs=["z"], inits=inits)
    assert_cut(m, {"matmul_q": (E, 12), "matmul_k": (E, 12), "matmul_v": (E, 12),
                   "matmul_o": (12, E), "matmul_d_g": (E, 21), "matmul_d_u": (E, 21),
                   "matmul_d": (21, E)}, groups=4)
