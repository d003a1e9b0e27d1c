"""Random ONNX graphs with random dead channels, for the property tests and bench/fuzz.py.

A `Recipe` (input channels, a list of ops each with its own seed, the head, how often weights
are zeroed or made non-finite, how the interface looks) says everything; `build` turns it into
a checked model. Hypothesis draws recipes (`recipes()`, which it can shrink); the bench draws
them from a seeded NumPy generator (`random_recipe`), from the same choices.

The ops: Conv 1x1/3x3 with and without padding, depthwise (channel multiplier 1 or 2) and
grouped Conv, BatchNormalization (some scales exactly 0), Relu / LeakyRelu / Sigmoid / Clip /
HardSwish, Add and Mul of two branches, Concat (axis 1 or -3), Split, MaxPool, per-channel
constant Add/Sub/Mul/Div, average pools, Slice (of one channel too), Pad, Resize, PRelu, a
channels-last MatMul, a MatMul over the width axis concatenated on axis 1 (`mixconcat`), a
one-channel tensor broadcast over another's channels (`broadcast`), and the patterns of issue
10: Concat of operands whose channels lie on different axes (`axisconcat`: through a Transpose,
a MatMul on the last axis; Squeeze + Flatten in the `mixflat` head, YOLOv8's box branch in the
`dfl` head), a 1-channel tensor broadcast by Add/Sub/Mul/Div against an n-channel one and then a
grouped or depthwise conv (`bcast`), one constant read by two convs and equal but separate
constants, and ops channelcut does not know (a model-local function in a custom domain, and
com.microsoft's QuickGelu, which ONNX Runtime runs); and issue 12's ShuffleNet channel shuffle
(`shuffle`, drawn only where asked for), and a constant Gather along the channel axis
(`gather`, the same); and, drawn only where asked for too (`RULE_OPS`), the ops of the
rule table the draws above never make: unary elementwise ops, Pow, reductions over the
channels or H and W mixed back in, Instance/Layer/LpNormalization, variadic Max/Min/Mean/Sum,
ConvTranspose, Softmax/LogSoftmax/Hardmax, global pools expanded or tiled back, Div of two
computed tensors, LpPool, and layout changes (H and W swapped, flattened and back, the batch
merged into the channels, `x.view(x.size(0), -1)` and back, `F.interpolate` to computed
sizes, channels tiled), and spatial ops with the attributes the other draws leave at their
defaults (strides, dilations, auto_pad, uneven pads, ceil_mode, reflect and cropping pads, a
channel-axis pad, cubic and downsampling Resize, every coordinate transformation, and
tf_crop_and_resize with its extrapolation value), and a squeeze-and-excitation gate of two Gemms
(transB, alpha, beta). Weight rows and columns are zeroed at
random and zero rows get zero, negative or positive biases, so that zero, constant and unread
channels appear everywhere; with `special` > 0 some constants get a NaN, an Inf, a huge value, a
denormal, or -0.0 for their zeros. The graph input can also be a graph output, and its batch a
dim_param.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import onnx
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
H, W = 4, 8
MAX_CHANNELS = 16
CUSTOM_DOMAIN = "custom.fuzz"

# The ops the first property tests drew (finite weights), with the two main added for issue 10
# (a MatMul over the width axis concatenated on axis 1, a one-channel broadcast).
BASE_OPS = ("conv", "conv", "conv", "bn", "act", "add", "mul", "concat", "split", "maxpool",
            "const", "avgpool", "slice", "pad", "resize", "prelu", "matmul", "mixconcat",
            "broadcast")
# The patterns of issue 10, each one op of a recipe.
NEW_OPS = ("axisconcat", "bcast", "shared", "custom")
OPS = BASE_OPS + NEW_OPS
# Issue 12's channel shuffle; drawn only by its own property test (OPS keeps the draws of the
# others and of bench/fuzz.py as they were).
SHUFFLE = "shuffle"
# A constant selection along the channel axis (a permutation, a subset, repeats); drawn only
# where asked for, as the shuffle.
GATHER = "gather"
BASE_HEADS = ("gemm", "conv", "gemm", "raw")
HEADS = BASE_HEADS + ("mixflat", "dfl")

# What a constant's entry may become when `special` strikes ("-0" turns its zeros into -0.0).
SPECIALS = (np.nan, np.inf, -np.inf, 1e30, -1e30, 1e18, 1e-40, -1e-40, "-0")


@dataclass(frozen=True)
class Recipe:
    """Everything `build` needs; hypothesis shrinks it."""

    in_channels: int
    steps: tuple[tuple[str, int], ...]  # (op, seed for that op's choices and weights)
    head: str
    p_row: float  # chance that a weight row (an output channel) is all zero
    p_col: float  # chance that a weight column (an input channel) is all zero
    extra_output: bool  # also make an intermediate tensor a graph output (it keeps its channels)
    special: float = 0.0  # chance that a float constant gets a non-finite, huge or tiny entry
    # "x" is a graph output too, declared with the input's dims ("same"), with batch 1
    # ("fixed"), with dims of unknown size ("unknown") or a batch named otherwise ("renamed");
    # "" when it is not an output
    input_is_output: str = ""
    dynamic_batch: bool = False  # the batch dim of the input (and of every output) is "N"


# The choices of every field but `steps`; hypothesis and `random_recipe` draw from these.
CHOICES = {
    "in_channels": tuple(range(1, 7)),
    "p_row": (0.0, 0.3, 0.6),
    "p_col": (0.0, 0.3, 0.6),
    "extra_output": (False, True),
    "special": (0.0, 0.0, 0.0, 0.1, 0.3),
    "input_is_output": ("",) * 12 + ("same", "fixed", "unknown", "renamed"),
    "dynamic_batch": (False, True),
}
MAX_STEPS = 8


def recipes(ops: tuple[str, ...] = OPS, heads: tuple[str, ...] = HEADS, *,
            must_use: tuple[str, ...] = (), **fixed) -> st.SearchStrategy[Recipe]:
    """Recipes drawing their steps from `ops` and their head from `heads`; every op of
    `must_use` appears at least once; `fixed` pins fields (`special=0.0`) or narrows them
    to a tuple of choices."""
    def field_strategy(name: str) -> st.SearchStrategy:
        value = fixed.get(name, CHOICES[name])
        return st.sampled_from(value) if isinstance(value, tuple) else st.just(value)

    step = st.tuples(st.sampled_from(ops), st.integers(0, 2**32 - 1))
    steps = st.lists(step, min_size=1, max_size=MAX_STEPS).map(tuple)
    if must_use:
        steps = st.tuples(steps, st.permutations(must_use), st.integers(0, 2**32 - 1)).map(
            lambda t: _insert(t[0], t[1], t[2]))
    return st.builds(Recipe, steps=steps, head=st.sampled_from(heads),
                     **{name: field_strategy(name) for name in CHOICES})


def _insert(steps: tuple[tuple[str, int], ...], ops: list[str], seed: int,
            ) -> tuple[tuple[str, int], ...]:
    """`steps` with one step of each op in `ops` placed at seeded positions."""
    rng = np.random.default_rng(seed)
    out = list(steps)
    for op in ops:
        out.insert(int(rng.integers(len(out) + 1)), (op, int(rng.integers(2**32))))
    return tuple(out)


def random_recipe(rng: np.random.Generator, ops: tuple[str, ...] = OPS,
                  heads: tuple[str, ...] = HEADS) -> Recipe:
    """A recipe from the same choices as `recipes()`, drawn from a NumPy generator."""
    steps = tuple((str(rng.choice(ops)), int(rng.integers(2**32)))
                  for _ in range(int(rng.integers(1, MAX_STEPS + 1))))
    values = {name: choices[int(rng.integers(len(choices)))] for name, choices in CHOICES.items()}
    return Recipe(steps=steps, head=str(rng.choice(heads)), **values)


def describe(recipe: Recipe) -> str:
    """The recipe as the Python expression that rebuilds it (for a test's @example)."""
    args = ", ".join(f"{f.name}={getattr(recipe, f.name)!r}" for f in fields(recipe))
    return f"Recipe({args})"


Tensor = tuple[str, int, int, int]  # (name, C, H, W) of a 4-D tensor with batch 1


@dataclass
class Net:
    """A graph under construction: nodes, initializers, and the 4-D tensors made so far."""

    recipe: Recipe
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    inits: dict[str, np.ndarray] = field(default_factory=dict)
    tensors: list[Tensor] = field(default_factory=list)
    domains: dict[str, int] = field(default_factory=dict)
    functions: dict[str, onnx.FunctionProto] = field(default_factory=dict)

    def name(self, stem: str) -> str:
        return f"{stem}{len(self.nodes)}_{len(self.inits)}"

    def const(self, stem: str, array: np.ndarray) -> str:
        name = self.name(stem)
        self.inits[name] = np.asarray(array)
        return name

    def weight(self, stem: str, array: np.ndarray, rng: np.random.Generator) -> str:
        """A float constant that the recipe's `special` may spoil (see `spoil`)."""
        return self.const(stem, spoil(array, rng, self.recipe.special))

    def add(self, op_node: onnx.NodeProto, channels: int, height: int, width: int) -> None:
        self.nodes.append(op_node)
        self.tensors.append((op_node.output[0], channels, height, width))

    def pick(self, rng: np.random.Generator) -> Tensor:
        """Mostly the newest tensor (a chain), sometimes an older one (a branch)."""
        if rng.random() < 0.7:
            return self.tensors[-1]
        return self.tensors[rng.integers(len(self.tensors))]

    def partner(self, rng: np.random.Generator, same_channels: bool, first: Tensor) -> Tensor:
        """A tensor to combine with `first` (maybe `first` itself): same spatial size, and the
        same channel count when `same_channels`."""
        fits = [t for t in self.tensors if t[2:] == first[2:] and
                (not same_channels or t[1] == first[1])]
        return fits[rng.integers(len(fits))]


def spoil(array: np.ndarray, rng: np.random.Generator, chance: float) -> np.ndarray:
    """`array`, or with probability `chance` a copy with one or two entries NaN, +-Inf, huge
    (1e18, +-1e30) or denormal (+-1e-40), or with its zeros made -0.0."""
    if chance == 0 or rng.random() >= chance:
        return array
    array = np.array(array, dtype=np.float32)
    special = SPECIALS[int(rng.integers(len(SPECIALS)))]
    if special == "-0":
        array[array == 0] = -0.0
    else:
        flat = array.reshape(-1)
        flat[rng.integers(flat.size, size=int(rng.integers(1, 3)))] = special
    return array


def node(op_type: str, inputs: list[str], outputs: list[str], domain: str | None = None,
         **attrs) -> onnx.NodeProto:
    return helper.make_node(op_type, inputs, outputs, name=f"{op_type.lower()}_{outputs[0]}",
                            domain=domain, **attrs)


def conv(x: str, w: str, y: str, b: str | None = None, *, pads: int = 0,
         group: int = 1) -> onnx.NodeProto:
    attrs = {"pads": [pads] * 4}
    if group != 1:
        attrs["group"] = group
    return node("Conv", [x, w] + ([b] if b else []), [y], **attrs)


def dead_biases(rng: np.random.Generator, n: int, zero_rows: np.ndarray) -> np.ndarray:
    """Random biases; the zero rows get 0, a negative or a positive value."""
    b = (rng.standard_normal(n) * 0.5).astype(np.float32)
    b[zero_rows] = rng.choice([0.0, 0.0, -0.5, -1.5, 0.75], size=int(zero_rows.sum()))
    return b


def conv_weight(net: Net, rng: np.random.Generator, cout: int, cin_g: int, k: int,
                ) -> tuple[np.ndarray, np.ndarray]:
    """Random conv weights with rows and columns zeroed at the recipe's rates; and the rows."""
    weight = (rng.standard_normal((cout, cin_g, k, k)) / np.sqrt(cin_g * k * k)).astype(
        np.float32)
    zero_rows = rng.random(cout) < net.recipe.p_row
    weight[zero_rows] = 0
    weight[:, rng.random(cin_g) < net.recipe.p_col] = 0
    return weight, zero_rows


def add_conv(net: Net, rng: np.random.Generator) -> None:
    x, c, h, w = net.pick(rng)
    kind = rng.choice(["1x1", "3x3 pad", "3x3 valid", "depthwise", "grouped"])
    if kind == "3x3 valid" and (h < 3 or w < 3):
        kind = "3x3 pad"
    if kind == "grouped" and c % 2:
        kind = "1x1"
    k = 1 if kind == "1x1" else 3
    pad = 0 if kind in ("1x1", "3x3 valid") else 1
    group, cin_g = 1, c
    if kind == "depthwise":
        group, cin_g = c, 1
        cout = c * (2 if 2 * c <= MAX_CHANNELS and rng.random() < 0.3 else 1)
    elif kind == "grouped":
        group, cin_g = 2, c // 2
        cout = 2 * int(rng.integers(1, 5))
    else:
        cout = int(rng.integers(2, 9))
    weight, zero_rows = conv_weight(net, rng, cout, cin_g, k)
    inputs = [x, net.weight("w", weight, rng)]
    if rng.random() < 0.8:
        inputs.append(net.weight("b", dead_biases(rng, cout, zero_rows), rng))
    y = net.name("conv")
    net.add(conv(*inputs[:2], y, *inputs[2:], pads=pad, group=group), cout,
            h - 2 * (1 - pad) * (k // 2), w - 2 * (1 - pad) * (k // 2))


def add_bn(net: Net, rng: np.random.Generator) -> None:
    """BatchNormalization; the scale is exactly 0 on some channels (network slimming)."""
    x, c, h, w = net.pick(rng)
    scale = rng.standard_normal(c).astype(np.float32)
    dead = rng.random(c) < net.recipe.p_row
    scale[dead] = 0  # the output is the constant B[c] there
    bias = dead_biases(rng, c, dead)
    mean = (rng.standard_normal(c) * 0.1).astype(np.float32)
    var = rng.uniform(0.5, 1.5, c).astype(np.float32)
    names = [net.weight(s, a, rng) for s, a in (("scale", scale), ("bias", bias), ("mean", mean))]
    names.append(net.const("var", var))
    net.add(node("BatchNormalization", [x, *names], [net.name("bn")]), c, h, w)


def add_act(net: Net, rng: np.random.Generator) -> None:
    x, c, h, w = net.pick(rng)
    op = rng.choice(["Relu", "Relu", "LeakyRelu", "Sigmoid", "Clip", "HardSwish"])
    y = net.name(op.lower())
    if op == "Clip":
        lo, hi = net.const("lo", np.float32(0)), net.const("hi", np.float32(6))
        net.add(node("Clip", [x, lo, hi], [y]), c, h, w)
    elif op == "LeakyRelu":
        net.add(node(op, [x], [y], alpha=0.1), c, h, w)
    else:
        net.add(node(op, [x], [y]), c, h, w)


def add_binary(op: str):
    def add(net: Net, rng: np.random.Generator) -> None:
        first = net.pick(rng)
        second = net.partner(rng, True, first)
        net.add(node(op, [first[0], second[0]], [net.name(op.lower())]), *first[1:])
    return add


def add_broadcast(net: Net, rng: np.random.Generator) -> None:
    """Add, Sub or Mul of a one-channel tensor (a 1x1 Conv, all zero at the rate of zero rows)
    broadcast over the channels of another, in either operand order."""
    x, c, h, w = net.pick(rng)
    weight = (rng.standard_normal((1, c, 1, 1)) / np.sqrt(c)).astype(np.float32)
    if rng.random() < net.recipe.p_row:
        weight[:] = 0
    one = net.name("one")
    net.nodes.append(conv(x, net.weight("w1c", weight, rng), one))
    other = net.partner(rng, False, (x, c, h, w))
    op = str(rng.choice(["Add", "Sub", "Mul"]))
    operands = [one, other[0]] if rng.random() < 0.5 else [other[0], one]
    net.add(node(op, operands, [net.name(op.lower())]), *other[1:])


def add_concat(net: Net, rng: np.random.Generator) -> None:
    first = net.pick(rng)
    second = net.partner(rng, False, first)
    if first[1] + second[1] > MAX_CHANNELS:
        return
    axis = 1 if rng.random() < 0.7 else -3
    net.add(node("Concat", [first[0], second[0]], [net.name("concat")], axis=axis),
            first[1] + second[1], *first[2:])


def add_split(net: Net, rng: np.random.Generator) -> None:
    x, c, h, w = net.pick(rng)
    if c < 2:
        return
    a = int(rng.integers(1, c))
    sizes = net.const("split", np.array([a, c - a], np.int64))
    outs = [net.name("split_a"), net.name("split_b")]
    net.nodes.append(node("Split", [x, sizes], outs, axis=1))
    order = [(outs[0], a), (outs[1], c - a)]
    if rng.random() < 0.5:  # either piece may be the one the chain goes on with
        order.reverse()
    net.tensors += [(name, n, h, w) for name, n in order]


def add_maxpool(net: Net, rng: np.random.Generator) -> None:
    x, c, h, w = net.pick(rng)
    y = net.name("pool")
    if h % 2 == 0 and w % 2 == 0 and rng.random() < 0.5:
        net.add(node("MaxPool", [x], [y], kernel_shape=[2, 2], strides=[2, 2]), c, h // 2, w // 2)
    else:
        net.add(node("MaxPool", [x], [y], kernel_shape=[3, 3], pads=[1, 1, 1, 1]), c, h, w)


def add_const(net: Net, rng: np.random.Generator) -> None:
    """Add, Sub, Mul or Div of a per-channel constant, some of its entries zero (not for Div)."""
    x, c, h, w = net.pick(rng)
    op = rng.choice(["Add", "Sub", "Mul", "Mul", "Div"])
    values = rng.standard_normal(c).astype(np.float32)
    values[rng.random(c) < net.recipe.p_row] = 2.0 if op == "Div" else 0.0
    shape = (1, c, 1, 1) if rng.random() < 0.7 else (c, 1, 1)
    net.add(node(op, [x, net.weight("k", values.reshape(shape), rng)], [net.name(op.lower())]),
            c, h, w)


def add_avgpool(net: Net, rng: np.random.Generator) -> None:
    x, c, h, w = net.pick(rng)
    y = net.name("avg")
    if rng.random() < 0.3:
        net.add(node("GlobalAveragePool", [x], [y]), c, 1, 1)
    else:
        net.add(node("AveragePool", [x], [y], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                     count_include_pad=int(rng.integers(2))), c, h, w)


def add_slice(net: Net, rng: np.random.Generator) -> None:
    """A channel range (channels outside it are not read; sometimes a single channel), or a
    spatial one."""
    x, c, h, w = net.pick(rng)
    if c >= 2 and rng.random() < 0.7:
        lo = int(rng.integers(0, c - 1))
        hi = int(rng.integers(lo + 1, c + 1))
        if rng.random() < 0.3:
            hi = lo + 1
        axis, size = 1, (hi - lo, h, w)
    elif w >= 2:
        lo, hi, axis, size = 1, w, 3, (c, h, w - 1)
    else:
        return
    names = [net.const(s, np.array([v], np.int64)) for s, v in
             (("starts", lo), ("ends", hi), ("axes", axis))]
    net.add(node("Slice", [x, *names], [net.name("slice")]), *size)


def add_pad(net: Net, rng: np.random.Generator) -> None:
    x, c, h, w = net.pick(rng)
    if h > 8 or w > 12:
        return
    pads = net.const("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))
    mode = rng.choice(["constant", "constant", "edge"])
    inputs = [x, pads]
    if mode == "constant":
        inputs.append(net.const("value", np.float32(rng.choice([0.0, 0.5]))))
    net.add(node("Pad", inputs, [net.name("pad")], mode=mode), c, h + 2, w + 2)


def add_resize(net: Net, rng: np.random.Generator) -> None:
    x, c, h, w = net.pick(rng)
    if 2 * h > 8 or 2 * w > 16:
        return
    scales = net.const("scales", np.array([1, 1, 2, 2], np.float32))
    mode = rng.choice(["nearest", "linear"])
    net.add(node("Resize", [x, "", scales], [net.name("resize")], mode=mode), c, 2 * h, 2 * w)


def add_prelu(net: Net, rng: np.random.Generator) -> None:
    x, c, h, w = net.pick(rng)
    slope = rng.uniform(0, 0.5, (c, 1, 1)).astype(np.float32)
    slope[rng.random(c) < net.recipe.p_row] = 0
    net.add(node("PRelu", [x, net.weight("slope", slope, rng)], [net.name("prelu")]), c, h, w)


def add_matmul(net: Net, rng: np.random.Generator) -> None:
    """Channels last, a MatMul over them, channels first again."""
    x, c, h, w = net.pick(rng)
    cout = int(rng.integers(2, 9))
    weight = (rng.standard_normal((c, cout)) / np.sqrt(c)).astype(np.float32)
    weight[rng.random(c) < net.recipe.p_col] = 0
    weight[:, rng.random(cout) < net.recipe.p_row] = 0
    last, mm = net.name("nhwc"), net.name("mm")
    net.nodes.append(node("Transpose", [x], [last], perm=[0, 2, 3, 1]))
    net.nodes.append(node("MatMul", [last, net.weight("wm", weight, rng)], [mm]))
    net.add(node("Transpose", [mm], [net.name("nchw")], perm=[0, 3, 1, 2]), cout, h, w)


def add_mixed_concat(net: Net, rng: np.random.Generator) -> None:
    """Concat along axis 1 of a MatMul over the width axis (its own channels lie on that last
    axis) and a tensor whose channels are on axis 1, in any order, the MatMul once or twice."""
    first = net.pick(rng)
    x, c, h, w = first
    second = net.partner(rng, False, first)
    copies = int(rng.integers(1, 3))
    if copies * c + second[1] > MAX_CHANNELS:
        return
    weight = (rng.standard_normal((w, w)) / np.sqrt(w)).astype(np.float32)
    weight[:, rng.random(w) < net.recipe.p_row] = 0
    mm = net.name("mmw")
    net.nodes.append(node("MatMul", [x, net.weight("ww", weight, rng)], [mm]))
    operands = [mm] * copies + [second[0]]
    operands = [operands[k] for k in rng.permutation(len(operands))]
    net.add(node("Concat", operands, [net.name("mixcat")], axis=1), copies * c + second[1], h, w)


def add_axis_concat(net: Net, rng: np.random.Generator) -> None:
    """Concat on axis 1 of a tensor whose channels are on axis 1 with one whose axis 1 is not
    channels: a conv's output moved to axis 2 by a Transpose (its axis 1 is then a spatial
    one), or a MatMul on the last axis (its zero columns make zero positions along W)."""
    x, c, h, w = net.pick(rng)
    if rng.random() < 0.5:
        weight, zero_rows = conv_weight(net, rng, h, c, 1)  # h output channels: [1, h, h, w]
        a = net.name("sq")
        net.nodes.append(conv(x, net.weight("w", weight, rng), a,
                              net.weight("b", dead_biases(rng, h, zero_rows), rng)))
        moved = net.name("moved")
        net.nodes.append(node("Transpose", [a], [moved], perm=[0, 2, 1, 3]))
        operand = (moved, h, h, w)
    else:
        weight = (rng.standard_normal((w, w)) / np.sqrt(w)).astype(np.float32)
        weight[rng.random(w) < net.recipe.p_col] = 0
        weight[:, rng.random(w) < net.recipe.p_row] = 0
        mm = net.name("mmw")
        net.nodes.append(node("MatMul", [x, net.weight("wm", weight, rng)], [mm]))
        operand = (mm, c, h, w)
    other = net.partner(rng, False, operand)
    if other[1] + operand[1] > MAX_CHANNELS:
        net.tensors.append(operand)
        return
    pair = [other, operand] if rng.random() < 0.5 else [operand, other]
    if other[1] + 2 * operand[1] <= MAX_CHANNELS and rng.random() < 0.3:
        pair.insert(0, operand)  # the Concat(mm, mm, conv)
    axis = 1 if rng.random() < 0.5 else -3
    net.add(node("Concat", [t[0] for t in pair], [net.name("mixcat")], axis=axis),
            sum(t[1] for t in pair), h, w)


def add_bcast(net: Net, rng: np.random.Generator) -> None:
    """A 1-channel tensor (a conv to 1 channel, often all zero; sometimes pooled to 1x1)
    broadcast by Add/Sub/Mul/Div against an n-channel tensor, then a grouped or depthwise
    conv (channel multiplier 1 or 2)."""
    first = net.pick(rng)
    x, c, h, w = first
    if c < 2:
        return
    src = net.partner(rng, False, first)
    weight, _ = conv_weight(net, rng, 1, src[1], 1)
    if rng.random() < 0.5:
        weight[:] = 0
    one = net.name("one")
    inputs = [src[0], net.weight("w", weight, rng)]
    if rng.random() < 0.5:
        inputs.append(net.weight("b", np.array([rng.choice([0.0, 0.0, 1.0, -0.5])], np.float32),
                                 rng))
    net.nodes.append(conv(*inputs[:2], one, *inputs[2:]))
    if rng.random() < 0.3:
        pooled = net.name("one_pool")
        net.nodes.append(node("GlobalAveragePool", [one], [pooled]))
        one = pooled
    op = str(rng.choice(["Add", "Sub", "Mul", "Div"]))
    mixed = net.name(op.lower())
    pair = [x, one] if rng.random() < 0.5 else [one, x]
    net.nodes.append(node(op, pair, [mixed]))
    if c % 2 == 0 and rng.random() < 0.3:
        group = 2
        cout = 2 * int(rng.integers(1, 5))
    else:
        group = c
        cout = c * (2 if 2 * c <= MAX_CHANNELS and rng.random() < 0.5 else 1)
    k, pad = (3, 1) if rng.random() < 0.5 else (1, 0)
    weight, zero_rows = conv_weight(net, rng, cout, c // group, k)
    inputs = [mixed, net.weight("w", weight, rng)]
    if rng.random() < 0.7:
        inputs.append(net.weight("b", dead_biases(rng, cout, zero_rows), rng))
    y = net.name("gconv")
    net.add(conv(*inputs[:2], y, *inputs[2:], pads=pad, group=group), cout, h, w)


def add_shared(net: Net, rng: np.random.Generator) -> None:
    """Two convs on two tensors (maybe the same) reading one weight constant (and maybe one
    bias), or equal but separate copies of it (what an exporter may leave)."""
    first = net.pick(rng)
    second = net.partner(rng, True, first)
    others = [t for t in net.tensors if t[1:] == first[1:] and t != first]
    if others and rng.random() < 0.8:  # two inputs that may lose different channels
        second = others[int(rng.integers(len(others)))]
    if rng.random() < 0.5:  # two fresh inputs, each with its own zero channels
        c = int(rng.integers(2, 9))
        fresh = []
        for _ in range(2):
            weight = (rng.standard_normal((c, first[1], 1, 1)) / np.sqrt(first[1])).astype(
                np.float32)
            weight[rng.random(c) < 0.5] = 0
            y = net.name("sin")
            net.nodes.append(conv(first[0], net.weight("w", weight, rng), y))
            fresh.append((y, c, *first[2:]))
        first, second = fresh
    c, h, w = first[1:]
    k, pad = (3, 1) if rng.random() < 0.5 else (1, 0)
    cout = int(rng.integers(2, 9))
    weight, zero_rows = conv_weight(net, rng, cout, c, k)
    weight = spoil(weight, rng, net.recipe.special)
    bias = spoil(np.zeros(cout, np.float32) if rng.random() < 0.5 else
                 dead_biases(rng, cout, zero_rows), rng, net.recipe.special)
    shared = rng.random() < 0.6
    with_bias = rng.random() < 0.7
    w1, b1 = net.const("ws", weight), net.const("bs", bias)
    outs = []
    for x in (first[0], second[0]):
        if not shared:
            w1, b1 = net.const("ws", weight.copy()), net.const("bs", bias.copy())
        y = net.name("sconv")
        net.nodes.append(conv(x, w1, y, b1 if with_bias else None, pads=pad))
        outs.append((y, cout, h, w))
    if rng.random() < 0.5:
        outs.reverse()
    net.tensors += outs


def add_custom(net: Net, rng: np.random.Generator) -> None:
    """An op channelcut does not know: a model-local function in a custom domain (Swish), or
    com.microsoft's QuickGelu."""
    x, c, h, w = net.pick(rng)
    y = net.name("custom")
    if rng.random() < 0.5:
        net.domains[CUSTOM_DOMAIN] = 1
        net.functions["Swish"] = helper.make_function(
            CUSTOM_DOMAIN, "Swish", ["x"], ["y"],
            [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])],
            opset_imports=[helper.make_opsetid("", OPSET)])
        net.add(node("Swish", [x], [y], domain=CUSTOM_DOMAIN), c, h, w)
    else:
        net.domains["com.microsoft"] = 1
        net.add(node("QuickGelu", [x], [y], domain="com.microsoft"), c, h, w)


def add_shuffle(net: Net, rng: np.random.Generator) -> None:
    """ShuffleNet's channel shuffle: Reshape (N, g, C/g, H, W), Transpose the two group axes
    (sometimes H and W too: no longer a channel permutation), Reshape back to C channels."""
    x, c, h, w = net.pick(rng)
    groups = [g for g in (2, 3, 4) if c % g == 0 and c > g]
    if not groups:
        return
    g = int(rng.choice(groups))
    perm = [0, 2, 1, 4, 3] if rng.random() < 0.2 else [0, 2, 1, 3, 4]
    split, moved = net.name("split5d"), net.name("shuffled")
    net.nodes.append(node("Reshape", [x, net.const("s", np.array([0, g, c // g, h, w]))],
                          [split]))
    net.nodes.append(node("Transpose", [split], [moved], perm=perm))
    merged = net.name("shuffle")
    net.add(node("Reshape", [moved, net.const("s", np.array([0, c, h, w]))], [merged]), c, h, w)


def add_gather(net: Net, rng: np.random.Generator) -> None:
    """x[:, indices] for constant indices: a permutation, a subset, or repeats, some negative,
    int64 or int32, on axis 1 or -3."""
    x, c, h, w = net.pick(rng)
    kind = rng.random()
    if kind < 0.3:
        index = rng.permutation(c)
    elif kind < 0.6:
        index = rng.choice(c, size=int(rng.integers(1, c + 1)), replace=False)
    else:
        index = rng.integers(0, c, size=int(rng.integers(1, MAX_CHANNELS + 1)))
    index = np.where(rng.random(index.size) < 0.2, index - c, index)
    dtype = np.int32 if rng.random() < 0.3 else np.int64
    axis = 1 if rng.random() < 0.8 else -3
    net.add(node("Gather", [x, net.const("index", index.astype(dtype))], [net.name("gather")],
                 axis=axis), int(index.size), h, w)


# Ops of channelcut's rule table that the draws above never make, each a builder drawing among
# several; drawn only where asked for (`RULE_OPS`), as the shuffle and the gather.
UNARY = ("Abs", "Neg", "Sign", "Floor", "Ceil", "Round", "Exp", "Tanh", "Erf", "Elu", "Celu",
         "Selu", "Softplus", "Softsign", "ThresholdedRelu", "HardSigmoid", "Cos", "Sin", "Sqrt",
         "Log", "Reciprocal", "Identity", "Dropout", "Cast")


def add_unary(net: Net, rng: np.random.Generator) -> None:
    """An elementwise op of one input (Sqrt, Log and Reciprocal outside their domain too)."""
    x, c, h, w = net.pick(rng)
    op = str(rng.choice(UNARY))
    y = net.name(op.lower())
    attrs = {"Elu": {"alpha": 0.7}, "Celu": {"alpha": 1.3}, "ThresholdedRelu": {"alpha": 0.4},
             "HardSigmoid": {"alpha": 0.3, "beta": 0.4}}.get(op, {})
    if op == "Cast":  # through float16 and back: a rounding both models make
        half = net.name("half")
        net.nodes.append(node("Cast", [x], [half], to=TensorProto.FLOAT16))
        net.add(node("Cast", [half], [y], to=TensorProto.FLOAT), c, h, w)
    else:
        net.add(node(op, [x], [y], **attrs), c, h, w)


def add_pow(net: Net, rng: np.random.Generator) -> None:
    """x ** e for a constant e (whole, fractional, negative, 0), or e ** x."""
    x, c, h, w = net.pick(rng)
    e = net.weight("e", np.array(rng.choice([2.0, 3.0, 0.5, -1.0, 0.0, -2.0]), np.float32), rng)
    operands = [x, e] if rng.random() < 0.8 else [e, x]
    net.add(node("Pow", operands, [net.name("pow")]), c, h, w)


REDUCE = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL1", "ReduceL2",
          "ReduceSumSquare", "ReduceLogSumExp", "ReduceProd", "ReduceLogSum")


def add_reduce(net: Net, rng: np.random.Generator) -> None:
    """A reduction over the channels (then broadcast against a tensor of the same size, as
    a spatial attention map), or over H and W, sometimes the batch too (then a per-channel
    gate of a tensor of the same channels, as squeeze-excite)."""
    x, c, h, w = net.pick(rng)
    op = str(rng.choice(REDUCE))
    over_channels = rng.random() < 0.5
    axes = [1] if over_channels else [0, 2, 3] if rng.random() < 0.3 else [2, 3]  # batch too
    y = net.name(op.lower())
    inputs = [x]
    attrs = {"keepdims": 1}
    if op == "ReduceSum":
        inputs.append(net.const("axes", np.array(axes, np.int64)))
    else:
        attrs["axes"] = axes
    net.nodes.append(node(op, inputs, [y], **attrs))
    other = net.partner(rng, not over_channels, (x, c, h, w))
    mix = str(rng.choice(["Add", "Mul", "Sub"]))
    pair = [other[0], y] if rng.random() < 0.7 else [y, other[0]]
    net.add(node(mix, pair, [net.name(mix.lower())]), *other[1:])


def add_norm(net: Net, rng: np.random.Generator) -> None:
    """InstanceNormalization (some scales 0), LayerNormalization over W or over (C, H, W),
    or LpNormalization over the channels."""
    x, c, h, w = net.pick(rng)
    kind = rng.random()
    y = net.name("norm")
    if kind < 0.4:
        scale = rng.standard_normal(c).astype(np.float32)
        dead = rng.random(c) < net.recipe.p_row
        scale[dead] = 0
        bias = dead_biases(rng, c, dead)
        net.add(node("InstanceNormalization", [x, net.weight("scale", scale, rng),
                                               net.weight("bias", bias, rng)], [y]), c, h, w)
    elif kind < 0.75:
        axis = -1 if rng.random() < 0.5 else 1
        dims = (w,) if axis == -1 else (c, h, w)
        scale = rng.standard_normal(dims).astype(np.float32)
        scale[rng.random(dims) < net.recipe.p_row] = 0
        net.add(node("LayerNormalization", [x, net.weight("scale", scale, rng),
                                            net.weight("bias", rng.standard_normal(dims)
                                                       .astype(np.float32), rng)], [y],
                     axis=axis), c, h, w)
    else:
        net.add(node("LpNormalization", [x], [y], axis=1, p=int(rng.choice([1, 2]))), c, h, w)


def add_variadic(net: Net, rng: np.random.Generator) -> None:
    """Max, Min, Mean or Sum of two or three tensors of one size."""
    first = net.pick(rng)
    others = [net.partner(rng, True, first) for _ in range(int(rng.integers(1, 3)))]
    op = str(rng.choice(["Max", "Min", "Mean", "Sum"]))
    net.add(node(op, [first[0], *(t[0] for t in others)], [net.name(op.lower())]), *first[1:])


def add_convtranspose(net: Net, rng: np.random.Generator) -> None:
    """ConvTranspose (weights [C_in, C_out / group, k, k]): 2x2 stride 2 (up-sampling), or
    3x3 pad 1; dense or depthwise; zero rows are input channels here, zero columns outputs."""
    x, c, h, w = net.pick(rng)
    up = 2 * h <= 8 and 2 * w <= 16 and rng.random() < 0.5
    k = 2 if up else 3
    depthwise = rng.random() < 0.3
    cout = c if depthwise else int(rng.integers(2, 9))
    per_group = 1 if depthwise else cout
    weight = (rng.standard_normal((c, per_group, k, k)) / np.sqrt(c)).astype(np.float32)
    weight[rng.random(c) < net.recipe.p_col] = 0
    dead = rng.random(per_group) < net.recipe.p_row
    weight[:, dead] = 0
    inputs = [x, net.weight("wt", weight, rng)]
    if rng.random() < 0.7:
        inputs.append(net.weight("bt", dead_biases(rng, cout, np.resize(dead, cout)), rng))
    attrs = {"strides": [2, 2]} if up else {"pads": [1, 1, 1, 1]}
    if depthwise:
        attrs["group"] = c
    net.add(node("ConvTranspose", inputs, [net.name("convt")], **attrs), cout,
            2 * h if up else h, 2 * w if up else w)


def add_softmax(net: Net, rng: np.random.Generator) -> None:
    """Softmax, LogSoftmax or Hardmax over the channels or the last axis."""
    x, c, h, w = net.pick(rng)
    op = str(rng.choice(["Softmax", "Softmax", "LogSoftmax", "Hardmax"]))
    axis = int(rng.choice([1, -1, -3]))
    net.add(node(op, [x], [net.name(op.lower())], axis=axis), c, h, w)


def add_expand(net: Net, rng: np.random.Generator) -> None:
    """A per-channel tensor (GlobalAveragePool, GlobalMaxPool or GlobalLpPool) brought back to
    H x W by Expand or Tile, then added to a tensor of the same channels; or an
    Unsqueeze / Squeeze round trip."""
    x, c, h, w = net.pick(rng)
    if rng.random() < 0.25:
        axis = net.const("axes", np.array([int(rng.choice([0, 2, 4]))], np.int64))
        five = net.name("unsq")
        net.nodes.append(node("Unsqueeze", [x, axis], [five]))
        net.add(node("Squeeze", [five, axis], [net.name("sq")]), c, h, w)
        return
    pool = str(rng.choice(["GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"]))
    pooled = net.name("gpool")
    net.nodes.append(node(pool, [x], [pooled], **({"p": 2} if pool == "GlobalLpPool" else {})))
    big = net.name("big")
    if rng.random() < 0.5:
        net.nodes.append(node("Expand", [pooled, net.const("shape", np.array([1, 1, h, w]))],
                              [big]))
    else:
        net.nodes.append(node("Tile", [pooled, net.const("reps", np.array([1, 1, h, w]))],
                              [big]))
    other = net.partner(rng, True, (x, c, h, w))
    net.add(node("Add", [other[0], big], [net.name("add")]), c, h, w)


def add_divide(net: Net, rng: np.random.Generator) -> None:
    """Div of two computed tensors (a divisor that may be 0 at zero channels), or an LpPool."""
    first = net.pick(rng)
    if rng.random() < 0.2 and first[2] % 2 == 0 and first[3] % 2 == 0:
        net.add(node("LpPool", [first[0]], [net.name("lppool")], kernel_shape=[2, 2],
                     strides=[2, 2], p=2), first[1], first[2] // 2, first[3] // 2)
        return
    second = net.partner(rng, True, first)
    net.add(node("Div", [first[0], second[0]], [net.name("div")]), *first[1:])


def add_layout(net: Net, rng: np.random.Generator) -> None:
    """Channels kept on axis 1 through a layout change: H and W swapped by a Transpose, H x W
    flattened by a Reshape (then a Softmax over the positions, as attention) and brought
    back, the batch merged into the channels and split again, flattened by
    `x.view(x.size(0), -1)` (a Shape read for its batch) and brought back to a constant shape or
    to the Shape (which reads the channel count), resized to computed sizes as
    `F.interpolate(x, size=...)` writes them, or the channels tiled (channel k of the output
    is channel k mod C)."""
    x, c, h, w = net.pick(rng)
    kind = rng.random()
    if kind < 0.25:
        net.add(node("Transpose", [x], [net.name("hw")], perm=[0, 1, 3, 2]), c, w, h)
    elif kind < 0.45:
        flat, soft = net.name("flat3d"), net.name("possoft")
        net.nodes.append(node("Reshape", [x, net.const("s", np.array([0, c, h * w]))], [flat]))
        net.nodes.append(node("Softmax", [flat], [soft], axis=-1))
        net.add(node("Reshape", [soft, net.const("s", np.array([0, c, h, w]))],
                     [net.name("back")]), c, h, w)
    elif kind < 0.6:  # the batch merged into the channels: [N * C, H, W], and back
        merged, act = net.name("nc"), net.name("ncrelu")
        net.nodes.append(node("Reshape", [x, net.const("s", np.array([-1, h, w]))], [merged]))
        net.nodes.append(node("LeakyRelu", [merged], [act], alpha=0.1))
        net.add(node("Reshape", [act, net.const("s", np.array([-1, c, h, w]))],
                     [net.name("unmerged")]), c, h, w)
    elif kind < 0.72:  # x.view(x.size(0), -1), and back
        shape, batch, target = net.name("xshape"), net.name("xbatch"), net.name("viewshape")
        flat, act = net.name("view"), net.name("viewrelu")
        net.nodes.append(node("Shape", [x], [shape]))
        net.nodes.append(node("Gather", [shape, net.const("i", np.array([0]))], [batch], axis=0))
        net.nodes.append(node("Concat", [batch, net.const("s", np.array([-1]))], [target],
                              axis=0))
        net.nodes.append(node("Reshape", [x, target], [flat]))
        net.nodes.append(node("LeakyRelu", [flat], [act], alpha=0.1))
        back = shape if rng.random() < 0.3 else net.const("s", np.array([-1, c, h, w]))
        net.add(node("Reshape", [act, back], [net.name("unviewed")]), c, h, w)
    elif kind < 0.86:  # F.interpolate(x, size=(2h, 2w)): sizes from Shape(x), or another's
        # Shape with as many channels (a count the cut may change where x's is not)
        source = x if rng.random() < 0.5 else net.partner(rng, True, (x, c, h, w))[0]
        shape, counts, sizes = net.name("rshape"), net.name("nc"), net.name("rsizes")
        if rng.random() < 0.5:  # TorchScript: a Slice of the Shape
            net.nodes.append(node("Shape", [source], [shape]))
            net.nodes.append(node("Slice", [shape, net.const("s", np.array([0])),
                                            net.const("e", np.array([2]))], [counts]))
        else:  # dynamo: the Shape's own end
            net.nodes.append(node("Shape", [source], [counts], end=2))
        net.nodes.append(node("Concat", [counts, net.const("hw", np.array([2 * h, 2 * w]))],
                              [sizes], axis=0))
        net.add(node("Resize", [x, "", "", sizes], [net.name("interp")], mode="nearest"),
                c, 2 * h, 2 * w)
    elif 2 * c <= MAX_CHANNELS:
        net.add(node("Tile", [x, net.const("reps", np.array([1, 2, 1, 1]))], [net.name("tile")]),
                2 * c, h, w)


def _output_hw(op_node: onnx.NodeProto, net: Net, c: int, h: int, w: int
               ) -> tuple[int, int, int] | None:
    """(C, H, W) of `op_node`'s output on a (1, c, h, w) input, as ONNX Runtime runs the node
    alone; None where it refuses the node, or where ONNX's shape inference says otherwise (a
    ceil_mode pool whose last window starts in the padding: the graph would not check)."""
    import onnxruntime as ort

    consts = [i for i in op_node.input[1:] if i in net.inits]
    graph = helper.make_graph(
        [op_node], "probe",
        [helper.make_tensor_value_info(op_node.input[0], TensorProto.FLOAT, [1, c, h, w])],
        [helper.make_tensor_value_info(op_node.output[0], TensorProto.FLOAT, None)],
        [numpy_helper.from_array(net.inits[i], i) for i in consts])
    probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=9)
    try:
        quiet = ort.SessionOptions()
        quiet.log_severity_level = 4
        session = ort.InferenceSession(probe.SerializeToString(), quiet,
                                       providers=["CPUExecutionProvider"])
        out = session.run(None, {op_node.input[0]: np.zeros((1, c, h, w), np.float32)})[0]
    except Exception:  # noqa: BLE001 - an attribute combination ONNX Runtime refuses
        return None
    inferred = onnx.shape_inference.infer_shapes(probe).graph.output[0].type.tensor_type.shape
    if out.ndim != 4 or min(out.shape) < 1 or \
            [d.dim_value for d in inferred.dim] != list(out.shape):
        return None
    return tuple(out.shape[1:])


def add_spatial(net: Net, rng: np.random.Generator) -> None:
    """Spatial ops with the attributes the other draws leave at their defaults: Conv
    (depthwise too) with strides, dilations, auto_pad or uneven pads; max and average pools
    with strides, padding, ceil_mode (and dilations for the max); Pad in reflect or edge mode,
    cropping, or padding the channel axis; Resize in cubic mode, downsampling, with each
    coordinate transformation and nearest mode, or tf_crop_and_resize with a box reaching
    past the borders (and, rarely, across the channels) and an extrapolation value."""
    x, c, h, w = net.pick(rng)
    kind = rng.choice(["conv", "pool", "pad", "resize"])
    y = net.name(f"sp{kind}")
    if kind == "conv":
        k, stride, dilation = (int(rng.choice(v)) for v in ([2, 3], [1, 2], [1, 1, 2]))
        attrs = {"kernel_shape": [k, k], "strides": [stride, stride]}
        auto_pad = str(rng.choice(["SAME_UPPER", "SAME_LOWER", "VALID", "NOTSET", "NOTSET"]))
        if auto_pad == "NOTSET":
            attrs["dilations"] = [dilation, dilation]
            attrs["pads"] = [int(p) for p in rng.integers(0, dilation * (k - 1) + 1, 4)]
        else:
            attrs["auto_pad"] = auto_pad
        group = c if rng.random() < 0.3 else 1
        if group > 1:
            attrs["group"] = group
        cout = c if group > 1 else int(rng.integers(2, 9))
        weight, zero_rows = conv_weight(net, rng, cout, c // group, k)
        inputs = [x, net.weight("w", weight, rng)]
        if rng.random() < 0.8:
            inputs.append(net.weight("b", dead_biases(rng, cout, zero_rows), rng))
        op_node = node("Conv", inputs, [y], **attrs)
    elif kind == "pool":
        op = str(rng.choice(["MaxPool", "AveragePool"]))
        k, stride = int(rng.choice([2, 3])), int(rng.choice([1, 2]))
        attrs = {"kernel_shape": [k, k], "strides": [stride, stride],
                 "pads": [int(p) for p in rng.integers(0, k, 4)],
                 "ceil_mode": int(rng.integers(2))}
        if op == "AveragePool":
            attrs["count_include_pad"] = int(rng.integers(2))
        elif rng.random() < 0.3:
            attrs["dilations"] = [2, 2]
        op_node = node(op, [x], [y], **attrs)
    elif kind == "pad":
        mode = str(rng.choice(["reflect", "edge", "constant", "constant"]))
        low = -1 if mode == "constant" else 0
        pads = rng.integers(low, 2, 8)
        pads[[0, 4]] = 0
        if mode == "constant" and rng.random() < 0.3:  # channels added, spatial pads or not
            pads[[1, 5]] = rng.integers(0, 3, 2)
            pads[[2, 3, 6, 7]] *= int(rng.integers(2))
        else:
            pads[[1, 5]] = 0
        inputs = [x, net.const("pads", pads.astype(np.int64))]
        if mode == "constant":
            inputs.append(net.const("value", np.float32(rng.choice([0.0, 0.5, -1.0]))))
        op_node = node("Pad", inputs, [y], mode=mode)
    else:
        mode = str(rng.choice(["nearest", "linear", "cubic"]))
        transform = str(rng.choice(["half_pixel", "pytorch_half_pixel", "align_corners",
                                    "asymmetric", "tf_crop_and_resize"]))
        scale = float(rng.choice([0.5, 1.5, 2.0]))
        attrs = {"mode": mode, "coordinate_transformation_mode": transform}
        if mode == "nearest":
            attrs["nearest_mode"] = str(rng.choice(["round_prefer_floor", "round_prefer_ceil",
                                                    "floor", "ceil"]))
        if mode == "cubic":
            attrs["cubic_coeff_a"] = float(rng.choice([-0.5, -0.75]))
            attrs["exclude_outside"] = int(rng.integers(2))
        roi = ""
        if transform == "tf_crop_and_resize":
            box = np.array([0, 0, -0.25, 0.25, 1, 1, 1.25, 0.75], np.float32)
            box[[2, 3, 6, 7]] += rng.uniform(-0.25, 0.25, 4).astype(np.float32)
            if rng.random() < 0.1:  # across the channels
                box[[1, 5]] = [0.25, 0.75]
            roi = net.const("roi", box)
            attrs["extrapolation_value"] = float(rng.choice([0.0, 0.5, -1.0]))
        scales = net.const("scales", np.array([1, 1, scale, scale], np.float32))
        op_node = node("Resize", [x, roi, scales], [y], **attrs)
    shape = _output_hw(op_node, net, c, h, w)
    if shape is not None and shape[0] <= MAX_CHANNELS and shape[1] * shape[2] <= 4 * H * W:
        net.add(op_node, *shape)


def _gemm(net: Net, rng: np.random.Generator, x: str, k: int, n: int) -> str:
    """x [1, k] -> Gemm -> [1, n]: weights stored as [k, n] or, with transB, [n, k]; alpha,
    beta and the bias's shape drawn; rows and columns zeroed at the recipe's rates, dead
    outputs with a zero, negative or positive bias."""
    weight = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    zero_out = rng.random(n) < net.recipe.p_row
    weight[:, zero_out] = 0
    weight[rng.random(k) < net.recipe.p_col] = 0
    trans_b = int(rng.integers(2))
    attrs = {"transB": trans_b} if trans_b else {}
    if rng.random() < 0.5:
        attrs["alpha"] = float(rng.choice([0.5, 2.0, -1.0]))
    if rng.random() < 0.5:
        attrs["beta"] = float(rng.choice([0.0, 0.5, 2.0]))
    inputs = [x, net.weight("fcw", weight.T.copy() if trans_b else weight, rng)]
    if rng.random() < 0.8:
        bias = dead_biases(rng, n, zero_out)
        inputs.append(net.weight("fcb", bias.reshape((1, n) if rng.random() < 0.3 else n), rng))
    y = net.name("fc")
    net.nodes.append(node("Gemm", inputs, [y], **attrs))
    return y


def add_dense(net: Net, rng: np.random.Generator) -> None:
    """A squeeze-and-excitation gate written with Linear layers, as older SE blocks are:
    GlobalAveragePool -> Flatten -> Gemm (c -> r) -> Relu -> Gemm (r -> c) -> Sigmoid ->
    Reshape [-1, c, 1, 1] -> Mul with the input (each Gemm with transB, alpha and beta drawn)."""
    x, c, h, w = net.pick(rng)
    pooled, flat, squeezed, gate, shaped = (net.name(s) for s in
                                            ("sepool", "seflat", "serelu", "segate", "seshape"))
    net.nodes.append(node("GlobalAveragePool", [x], [pooled]))
    net.nodes.append(node("Flatten", [pooled], [flat]))
    r = int(rng.integers(1, 5))
    net.nodes.append(node("Relu", [_gemm(net, rng, flat, c, r)], [squeezed]))
    net.nodes.append(node("Sigmoid", [_gemm(net, rng, squeezed, r, c)], [gate]))
    net.nodes.append(node("Reshape", [gate, net.const("s", np.array([-1, c, 1, 1]))], [shaped]))
    net.add(node("Mul", [x, shaped], [net.name("se")]), c, h, w)


RULE_BUILDERS = {"unary": add_unary, "pow": add_pow, "reduce": add_reduce, "norm": add_norm,
                 "variadic": add_variadic, "convtranspose": add_convtranspose,
                 "softmax": add_softmax, "expand": add_expand, "divide": add_divide,
                 "layout": add_layout, "spatial": add_spatial, "dense": add_dense}
RULE_OPS = tuple(RULE_BUILDERS)


BUILDERS = {"conv": add_conv, "bn": add_bn, "act": add_act, "add": add_binary("Add"),
            "mul": add_binary("Mul"), "concat": add_concat, "split": add_split,
            "maxpool": add_maxpool, "const": add_const, "avgpool": add_avgpool,
            "slice": add_slice, "pad": add_pad, "resize": add_resize, "prelu": add_prelu,
            "matmul": add_matmul, "mixconcat": add_mixed_concat,
            "broadcast": add_broadcast, "axisconcat": add_axis_concat, "bcast": add_bcast,
            "shared": add_shared, "custom": add_custom, "shuffle": add_shuffle,
            "gather": add_gather, **RULE_BUILDERS}


def add_dfl_head(net: Net, rng: np.random.Generator) -> tuple[str, tuple[int, ...]]:
    """YOLOv8's detect head: a box branch (conv to 4 x bins, Reshape, Transpose, Softmax over
    the bins, a 1-channel conv taking their expectation, Reshape to [N, 4, HW]) first in an
    axis-1 Concat with a class branch (conv to n classes, Reshape to [N, n, HW])."""
    last, c, h, w = net.tensors[-1]
    bins, classes = int(rng.integers(2, 5)), int(rng.integers(2, 9))
    box, box4, moved, soft, expect, boxes = (net.name(s) for s in (
        "box", "box4", "boxt", "soft", "expect", "boxes"))
    cls, scores = net.name("cls"), net.name("scores")
    for out, n in ((box, 4 * bins), (cls, classes)):
        weight, zero_rows = conv_weight(net, rng, n, c, 1)
        net.nodes.append(conv(last, net.weight("w", weight, rng), out,
                              net.weight("b", dead_biases(rng, n, zero_rows), rng)))
    shape = net.const("shape", np.array([-1, 4, bins, h * w], np.int64))
    net.nodes += [node("Reshape", [box, shape], [box4]),
                  node("Transpose", [box4], [moved], perm=[0, 2, 1, 3]),
                  node("Softmax", [moved], [soft], axis=1),
                  conv(soft, net.const("dfl", np.arange(bins, dtype=np.float32).reshape(
                      1, bins, 1, 1)), expect),
                  node("Reshape", [expect, net.const("shape", np.array([-1, 4, h * w],
                                                                      np.int64))], [boxes]),
                  node("Reshape", [cls, net.const("shape", np.array([-1, classes, h * w],
                                                                    np.int64))], [scores]),
                  node("Concat", [boxes, scores], ["y"], axis=1)]
    return "y", (1, 4 + classes, h * w)


def add_head(net: Net, rng: np.random.Generator) -> tuple[str, tuple[int, ...]]:
    """The recipe's head on the newest tensor; its output's name and shape (batch 1)."""
    last, c, h, w = net.tensors[-1]
    head = net.recipe.head
    if head in ("gemm", "mixflat"):
        gap, flat = net.name("gap"), net.name("flat")
        net.nodes.append(node("GlobalAveragePool", [last], [gap]))
        features = c
        if head == "gemm":
            net.nodes.append(node("Flatten", [gap], [flat]))
        else:  # channels of a squeezed GAP next to an other tensor's (channel, H, W) flattened
            squeezed, other, cat = net.name("sqz"), net.name("flat_other"), net.name("flatcat")
            x2, c2, h2, w2 = net.tensors[int(rng.integers(len(net.tensors)))]
            net.nodes += [node("Squeeze", [gap, net.const("axes", np.array([3], np.int64))],
                               [squeezed]),
                          node("Flatten", [squeezed], [flat]),
                          node("Flatten", [x2], [other])]
            order = [flat, other] if rng.random() < 0.5 else [other, flat]
            net.nodes.append(node("Concat", order, [cat], axis=int(rng.choice([1, -1]))))
            flat, features = cat, c + c2 * h2 * w2
        weight = (rng.standard_normal((features, 5)) / np.sqrt(features)).astype(np.float32)
        weight[rng.random(features) < net.recipe.p_col] = 0
        net.nodes.append(node("Gemm", [flat, net.weight("fc", weight, rng),
                                       net.const("fc_b", np.ones(5, np.float32))], ["y"]))
        return "y", (1, 5)
    if head == "dfl":
        return add_dfl_head(net, rng)
    if head == "conv":
        weight = (rng.standard_normal((3, c, 1, 1)) / np.sqrt(c)).astype(np.float32)
        weight[:, rng.random(c) < net.recipe.p_col] = 0
        net.nodes.append(conv(last, net.weight("head", weight, rng), "y"))
        return "y", (1, 3, h, w)
    return last, (1, c, h, w)


def build(recipe: Recipe) -> onnx.ModelProto:
    """The recipe's model, checked (full check)."""
    net = Net(recipe)
    net.tensors.append(("x", recipe.in_channels, H, W))
    for op, seed in recipe.steps:
        BUILDERS[op](net, np.random.default_rng(seed))
    rng = np.random.default_rng(len(recipe.steps))
    if net.tensors[-1][0] == "x":  # every step was skipped: the graph needs one node
        add_conv(net, rng)
    outputs = [add_head(net, rng)]
    if recipe.extra_output:
        extra = net.tensors[int(rng.integers(len(net.tensors)))]
        if extra[0] not in (o[0] for o in outputs) and extra[0] != "x":
            outputs.append((extra[0], extra[1:]))
    batch = "N" if recipe.dynamic_batch else 1

    def declared(name: str, dims: tuple[int, ...], first: int | str | None = batch
                 ) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [first, *dims[1:]])

    x_dims = (1, recipe.in_channels, H, W)
    # the head's output has the rank its head gives; the extra output is 4-D ((C, H, W) given)
    declared_outputs = [declared(*outputs[0])] + [declared(name, (1, *dims))
                                                  for name, dims in outputs[1:]]
    if recipe.input_is_output == "unknown":
        declared_outputs.append(helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                              [None] * 4))
    elif recipe.input_is_output:
        first = {"same": batch, "fixed": 1, "renamed": "batch"}[recipe.input_is_output]
        declared_outputs.append(declared("x", x_dims, first))
    graph = helper.make_graph(
        net.nodes, "random", [declared("x", x_dims)], declared_outputs,
        [numpy_helper.from_array(a, name) for name, a in net.inits.items()])
    opsets = [helper.make_opsetid("", OPSET)]
    opsets += [helper.make_opsetid(d, v) for d, v in net.domains.items()]
    m = helper.make_model(graph, opset_imports=opsets, ir_version=9,
                          functions=list(net.functions.values()))
    onnx.checker.check_model(m, full_check=True)
    return m
