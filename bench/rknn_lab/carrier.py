"""Carrier-channel fold on a Conv->Relu->Conv chain (scratch prototype, demo model): of the constant
channels (all-zero filter row -> relu(bias)) between two convs, keep one (the carrier c*) and fold the
others into the reader's column c*: W[:, c*] += sum_c (v_c / v_c*) W[:, c]. Exact in real arithmetic,
padding included (every folded channel is zero-padded exactly like the carrier)."""
import sys, numpy as np, onnx
from onnx import numpy_helper as nh
m = onnx.load(sys.argv[1]); g = m.graph
init = {i.name: i for i in g.initializer}
def arr(n): return nh.to_array(init[n]).copy()
def put(n, a): init[n].CopyFrom(nh.from_array(a.astype(np.float32), n))
convs = [n for n in g.node if n.op_type == "Conv"]
for prod, read in zip(convs, convs[1:]):
    W, b = arr(prod.input[1]), arr(prod.input[2]); R = arr(read.input[1])
    const = np.flatnonzero(~W.reshape(W.shape[0], -1).any(axis=1))
    v = np.maximum(b[const], 0)
    const, v = const[v != 0], v[v != 0]
    if const.size < 2: continue
    car, rest = const[0], const[1:]
    R64 = R.astype(np.float64)
    if "--drop" in sys.argv: rest = const  # inexact cost floor: drop every constant channel
    else: R64[:, car] += np.einsum("ockl,c->okl", R64[:, rest], v[1:] / v[0])
    keep = np.setdiff1d(np.arange(W.shape[0]), rest)
    put(prod.input[1], W[keep]); put(prod.input[2], b[keep]); put(read.input[1], R64[:, keep])
    print(f"{prod.name}: {const.size} constant channels -> 1 carrier; {W.shape[0]} -> {keep.size}")
for v in list(g.value_info): g.value_info.remove(v)
onnx.save(m, sys.argv[2])
