"""Real architectures (issue 4): every model loads as an ONNX file and as an nn.Module, cuts and
verifies, with channels zeroed three ways users prune:

(a) naive: `ln_structured(dim=0)` on every Conv2d and Linear, each layer on its own;
(b) consistent: whole coupled groups zeroed in torch (channelcut.torch_groups), so residual,
    concat, depthwise and grouped-conv couplings allow removal. The zero-only cut must remove
    every zeroed group and exactly the weight bytes of their rows and of the columns that read
    them. Which channels go together comes from channelcut.groups; which weight rows and
    columns they free, and their bytes, is counted here from the exported graph, apart from
    the cut's own rewrite;
(c) input side: `ln_structured(dim=1)`, zero input columns.

Outputs must match on every output: cosine >= 0.99999 and max relative error <= 1e-4. Inputs
are as small as each architecture allows (tests/zoo.SMALL_INPUTS). Every test of one model
shares one built model (pytest groups the tests by the module-scoped model fixture).
"""

from __future__ import annotations

import copy
import warnings
from collections import defaultdict
from functools import cached_property

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

torch = pytest.importorskip("torch")
import zoo  # noqa: E402 - needs torch

try:
    zoo.import_torchvision()
except ImportError as error:
    pytest.skip(str(error), allow_module_level=True)

import channelcut  # noqa: E402
from channelcut.groups import ChannelGroup, channel_groups  # noqa: E402
from channelcut.pytorch import to_onnx  # noqa: E402
from channelcut.torch_groups import (ModuleGroup, module_channel_groups,  # noqa: E402
                                     pick_groups, zero_module_groups)

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore")]

MODELS = ["resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "mobilenet_v2",
          "mobilenet_v3_large", "efficientnet_b0", "mnasnet1_0", "densenet121", "googlenet",
          "inception_v3", "squeezenet1_1", "shufflenet_v2_x1_0", "regnet_y_400mf", "vgg16_bn",
          "convnext_tiny", "vit_b_16", "swin_t", "yolo", "unet",
          *zoo.ULTRALYTICS]  # yolov8n, yolov8n-seg, yolov8n-pose, yolo11n, when installed
MIN_COSINE = 0.99999
MAX_REL_ERROR = 1e-4
NAIVE_AMOUNT = 0.5
GROUP_FRACTION = 0.4  # of the prunable groups, seeded


class Case:
    """One model and what its tests share, computed on first use. Only small results and the
    models are kept: vgg16_bn's weights alone are 553 MB."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.shape = zoo.SMALL_INPUTS[name]

    @cached_property
    def model(self) -> torch.nn.Module:
        return zoo.build(self.name, seed=0, **zoo.SMALL_KWARGS.get(self.name, {}))

    def copy(self) -> torch.nn.Module:
        return copy.deepcopy(self.model)

    @cached_property
    def groups(self) -> list[ModuleGroup]:
        return module_channel_groups(self.model, self.shape)

    @cached_property
    def picked(self) -> list[ModuleGroup]:
        return pick_groups(self.groups, GROUP_FRACTION, seed=0)

    @cached_property
    def zeroed(self) -> torch.nn.Module:
        model = self.copy()
        zero_module_groups(model, self.picked)
        return model

    def pruned_export(self, dim: int) -> onnx.ModelProto:
        """A copy pruned naively with ln_structured along `dim`, every Conv2d and Linear."""
        model = zoo.prune_ln_structured(self.copy(), NAIVE_AMOUNT, dim=dim, linear=True)
        return zoo.export_onnx(model, self.shape)

    def consistent_file(self) -> tuple[onnx.ModelProto, channelcut.CutResult]:
        """(b) through an ONNX file: the zeroed model's TorchScript export, cut zero-only."""
        proto = zoo.export_onnx(self.zeroed, self.shape)
        result = cut(proto, fold=False)
        self.file_removed_groups = result.report.removed_groups
        return proto, result

    @cached_property
    def file_removed_groups(self) -> int:
        return self.consistent_file()[1].report.removed_groups


# One xdist worker per model: its tests share the built model (the module-scoped fixture).
@pytest.fixture(scope="module",
                params=[pytest.param(name, marks=pytest.mark.xdist_group(name)) for name in MODELS])
def case(request) -> Case:
    if request.param in zoo.ULTRALYTICS:
        pytest.importorskip("ultralytics", reason=f"`{zoo.ULTRALYTICS_HINT}` to run it")
        zoo.import_ultralytics()
    return Case(request.param)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Run torch on one thread: the exports run the models on tiny inputs, where a second
    OpenMP thread gains nothing and, on a busy 2-core machine, spin-waits (the TorchScript
    export of densenet121 took 6.5 s with two threads, 0.5 s with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def cut(model: onnx.ModelProto, fold: bool) -> channelcut.CutResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = channelcut.cut(model, fold=fold, threshold=MIN_COSINE)
    return result


def assert_verified(result: channelcut.CutResult) -> None:
    """Every output matches and the weights did not grow."""
    report = result.report
    assert report.checks, "not verified"
    for check in report.checks:
        assert check.cosine >= MIN_COSINE, check
        assert check.max_rel_error <= MAX_REL_ERROR, check
    assert report.weight_bytes_after <= report.weight_bytes_before


# --- (a) naive output channels -------------------------------------------------------------------

def test_naive_output_channels(case):
    proto = case.pruned_export(dim=0)
    full, zero = cut(proto, fold=True), cut(proto, fold=False)
    assert_verified(full)
    assert_verified(zero)
    # Every layer loses half its rows; behind a BatchNorm (or a Linear's bias) they are
    # constants the full cut folds. The zero-only cut removes only what ends up exactly zero
    # (a negative constant through ReLU): nothing in the GELU transformers and ConvNeXt.
    assert full.report.removed_groups > 0
    assert full.report.weight_bytes_after <= zero.report.weight_bytes_after


# --- (b) consistent groups ----------------------------------------------------------------------

def test_consistent_groups_onnx_file(case):
    assert 0.3 <= len(case.picked) / sum(g.prunable for g in case.groups) <= 0.5
    proto, result = case.consistent_file()
    assert_verified(result)
    assert_exact_cut(case, proto, result)


def test_consistent_groups_front_end(case):
    """The same zeroed nn.Module through channelcut's own PyTorch front end cuts the same."""
    proto = to_onnx(case.zeroed, [case.shape])
    result = cut(proto, fold=False)
    assert_verified(result)
    assert_exact_cut(case, proto, result)
    # Bytes may differ: the exporters share equal constants differently; each is exact
    # against its own export.
    assert result.report.removed_groups == case.file_removed_groups


def assert_exact_cut(case: Case, proto: onnx.ModelProto, result: channelcut.CutResult) -> None:
    """The cut removed every zeroed group the export still has, and exactly their bytes.

    Bytes are compared on the layers' parameters (parameter_bytes): the report's weight bytes
    also change where the cut folds shape arithmetic (ViT's and Swin's scale constants), or
    gives nodes that shared an integer constant (Split sizes) their own copies.
    """
    before, after = Stored(proto), Stored(result.model)
    groups = channel_groups(proto)
    zeroed = zeroed_groups(before, groups)
    assert len(zeroed) == sum(g.parts for g in case.picked)
    report = result.report
    # and the groups whose channels are dead by their value range (a ReLU6 after a conv whose
    # bias keeps its sum negative), each named by the report's cut-by-range list
    by_range = {(c.tensor, k) for c in report.range_cuts for k in c.channels}
    zeroed_ids = {id(g) for g in zeroed}  # (a list's `in` compares every group: quadratic)
    dead = zeroed + [g for g in groups
                     if by_range and by_range & set(g.channels) and id(g) not in zeroed_ids]
    assert report.removed_groups == len(dead)
    assert parameter_bytes(after) == parameter_bytes_after(before, groups, dead)
    assert report.weight_bytes_before == before.total_bytes()
    assert report.weight_bytes_after == after.total_bytes()


# --- (c) input side -----------------------------------------------------------------------------

def test_input_side_columns(case):
    result = cut(case.pruned_export(dim=1), fold=True)
    assert_verified(result)
    # A channel whose every reader reads it through zero columns is dead, in every model.
    assert result.report.removed_groups > 0


def test_full_cut_removes_at_least_the_zero_cut_on_a_regnet_block():
    """Grouped-conv balancing once trimmed channels before the squeeze-excite Mul had settled:
    the full cut left 2584 bytes, the zero-only 1996 (regnet_y_400mf with dim=1 pruning)."""
    model = RegNetBlock().eval()
    zoo.prune_ln_structured(model, NAIVE_AMOUNT, dim=1)
    proto = zoo.export_onnx(model, (1, 12, 4, 4))
    full, zero = cut(proto, fold=True), cut(proto, fold=False)
    assert full.report.weight_bytes_after <= zero.report.weight_bytes_after


class RegNetBlock(torch.nn.Module):
    """RegNet-Y's block: 1x1 -> grouped 3x3 (3 groups) -> squeeze-excite -> 1x1, residual."""

    def __init__(self, width: int = 12, group_width: int = 4, squeeze: int = 3) -> None:
        super().__init__()
        nn = torch.nn
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(4)
            self.a = nn.Conv2d(width, width, 1)
            self.b = nn.Conv2d(width, width, 3, padding=1, groups=width // group_width)
            self.fc1, self.fc2 = nn.Conv2d(width, squeeze, 1), nn.Conv2d(squeeze, width, 1)
            self.c = nn.Conv2d(width, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.b(torch.relu(self.a(x))))
        pooled = torch.nn.functional.adaptive_avg_pool2d(h, 1)
        scale = torch.sigmoid(self.fc2(torch.relu(self.fc1(pooled))))
        return torch.relu(x + self.c(scale * h))


# --- the expectation of (b), counted from the exported graph --------------------------------------

Slice = tuple[str, int, int]  # (constant, axis, index)
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
ELEMENTWISE_OPS = ("Add", "Sub", "Mul", "Div", "PRelu", "Max", "Min", "Where")


class Stored:
    """The constants of one ONNX model: initializers and Constant nodes' values by name, and
    the constant each tensor is, where an Identity passes one on (the TorchScript exporter
    shares equal initializers, such as torchvision's all-zero conv biases, that way)."""

    def __init__(self, proto: onnx.ModelProto) -> None:
        self.proto = proto
        self.arrays = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
        for node in proto.graph.node:
            if node.op_type == "Constant" and node.attribute and \
                    node.attribute[0].name == "value":
                self.arrays[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.sources = {name: name for name in self.arrays}
        for node in proto.graph.node:
            if node.op_type == "Identity" and node.input[0] in self.sources:
                self.sources[node.output[0]] = self.sources[node.input[0]]
        self.nodes = {node.name: node for node in proto.graph.node}

    def __contains__(self, name: str) -> bool:
        return name in self.sources

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[self.sources[name]]

    def total_bytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())

    def readers(self) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
        """Tensor -> (node, input index) of each reader; a constant's under its own name."""
        found = defaultdict(list)
        for node in self.proto.graph.node:
            if node.op_type == "Identity" and node.output[0] in self.sources:
                continue  # a constant's alias, not a reader
            for index, name in enumerate(node.input):
                found[self.sources.get(name, name)].append((node, index))
        return found


def zeroed_groups(stored: Stored, groups: list[ChannelGroup]) -> list[ChannelGroup]:
    """The coupled groups whose producing rows (weights, bias) are all zero."""
    return [g for g in groups
            if all(row_is_zero(stored.nodes[name], row, stored) for name, row in g.rows)]


def row_is_zero(node: onnx.NodeProto, row: int, stored: Stored) -> bool:
    slices = producer_slices(node, row, stored)
    return bool(slices) and all(
        not np.any(np.take(stored[name], [index], axis=axis)) for name, axis, index in slices)


def parameter_bytes_after(stored: Stored, groups: list[ChannelGroup],
                          zeroed: list[ChannelGroup]) -> int:
    """The bytes of the layers' parameters (as parameter_bytes counts them) that the cut must
    leave: every weight row that makes the `zeroed` groups' channels and every column that
    reads them goes. `groups` are all the model's groups (channel counts of tensors).

    A constant several layers share is cut once per different set of slices they need (and
    kept whole for a reader that needs none); constants that come out equal are one (the cut
    shares equal constants by content).
    """
    readers = stored.readers()
    channels_of = defaultdict(int)  # tensor -> its channel count, to find Flatten's blocks
    for group in groups:
        for tensor, k in group.channels:
            channels_of[tensor] = max(channels_of[tensor], k + 1)
    # constant -> reading node -> axis -> removed positions
    removed: dict[str, dict[str, dict[int, set[int]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(set)))
    for group in zeroed:
        slices = [(name, s) for name, row in group.rows
                  for s in producer_slices(stored.nodes[name], row, stored)]
        for tensor, k in group.channels:
            for node, index in readers[tensor]:
                slices += [(node.name, s) for s in
                           reader_slices(node, index, k, channels_of[tensor], stored)]
        for node_name, (name, axis, position) in slices:
            removed[stored.sources[name]][node_name][axis].add(position)
    left: dict[tuple, int] = {}
    for name in parameter_names(stored):
        by_reader = removed.get(name, {})
        shape = stored.arrays[name].shape
        cuts = {tuple(frozenset(axes.get(axis, ())) for axis in range(len(shape)))
                for axes in by_reader.values()}
        if len(by_reader) < len({node.name for node, _ in readers[name]}):
            cuts.add(tuple(frozenset() for _ in shape))  # a reader that keeps it whole
        for cut in cuts:
            array = stored.arrays[name]
            for axis, gone in enumerate(cut):
                array = np.delete(array, sorted(gone), axis=axis)
            if array.size >= 2:  # as parameter_names sees the cut model (a bias cut to one
                # entry is a scalar there)
                left[(array.dtype.str, array.shape, array.tobytes())] = array.nbytes
    return sum(left.values())


def producer_slices(node: onnx.NodeProto, row: int, stored: Stored) -> list[Slice]:
    """The weight row and bias entry that make output channel `row` of a weighted node."""
    if node.input[1] not in stored:
        return []
    weight = stored[node.input[1]]
    axis = {"Conv": 0, "ConvTranspose": 1, "MatMul": weight.ndim - 1,
            "Gemm": 0 if attribute(node, "transB", 0) else 1}[node.op_type]
    slices = [(node.input[1], axis, row)]
    if len(node.input) > 2 and node.input[2] in stored and stored[node.input[2]].size > 1:
        slices.append((node.input[2], stored[node.input[2]].ndim - 1, row))
    return slices


def reader_slices(node: onnx.NodeProto, index: int, k: int, channels: int,
                  stored: Stored) -> list[Slice]:
    """What of a reader's constants goes with channel `k` of its input `index`."""
    constants = [name for name in node.input if name in stored and stored[name].size > 1
                 and stored[name].dtype.kind == "f"]
    if node.op_type in ("Resize", "LayerNormalization") or not constants:
        return []  # Resize's scales; a LayerNorm's channels are never cut
    if node.op_type in WEIGHTED_OPS and index != 0:
        return []  # read as the weight or bias: covered by the producer side
    if node.op_type == "Conv":
        return conv_reader_slices(node, k, stored)
    if node.op_type == "ConvTranspose":
        return [(node.input[1], 0, k)]
    if node.op_type in ("Gemm", "MatMul"):
        weight = stored[node.input[1]]
        axis = weight.ndim - 2 if node.op_type == "MatMul" else \
            1 if attribute(node, "transB", 0) else 0
        block = weight.shape[axis] // channels  # a Flatten gives each channel H*W columns
        return [(node.input[1], axis, p) for p in range(k * block, (k + 1) * block)]
    if node.op_type == "BatchNormalization":
        return [(name, 0, k) for name in constants]
    if node.op_type in ELEMENTWISE_OPS:
        slices = []
        for name in constants:
            wide = [axis for axis, dim in enumerate(stored[name].shape) if dim > 1]
            assert len(wide) == 1, f"{node.name}: constant {name} of shape " \
                f"{stored[name].shape} has no single channel axis"
            slices.append((name, wide[0], k))
        return slices
    raise AssertionError(f"{node.op_type} node {node.name} reads a cut channel with constants "
                         f"{constants}: teach parameter_bytes_after its layout")


def conv_reader_slices(node: onnx.NodeProto, k: int, stored: Stored) -> list[Slice]:
    """A plain conv loses column k; a grouped one loses the whole conv group that reads k
    (torch_groups zeroes grouped convs' groups whole: input and output channels together)."""
    weight = stored[node.input[1]]
    groups = attribute(node, "group", 1)
    if groups == 1:
        return [(node.input[1], 1, k)]
    rows_per_group = weight.shape[0] // groups
    group = k // weight.shape[1]
    rows = range(group * rows_per_group, (group + 1) * rows_per_group)
    slices = [(node.input[1], 0, r) for r in rows]
    if len(node.input) > 2 and node.input[2] in stored:
        slices += [(node.input[2], 0, r) for r in rows]
    return slices


def parameter_names(stored: Stored) -> set[str]:
    """The layers' float parameters: the constants weighted layers and BatchNorms read, and
    the per-channel ones (one axis longer than 1) of elementwise ops. Not scalars, nor what
    the cut's shape folding makes (Swin's attention masks)."""
    return {stored.sources[name] for node in stored.proto.graph.node for name in node.input
            if name in stored and is_parameter(node, stored[name])}


def parameter_bytes(stored: Stored) -> int:
    """Bytes of the layers' parameters (parameter_names), equal constants counted once."""
    arrays = (stored.arrays[name] for name in parameter_names(stored))
    return sum({(a.dtype.str, a.shape, a.tobytes()): a.nbytes for a in arrays}.values())


def is_parameter(node: onnx.NodeProto, array: np.ndarray) -> bool:
    if array.dtype.kind != "f" or array.size < 2:
        return False
    if node.op_type in (*WEIGHTED_OPS, "BatchNormalization"):
        return True
    return node.op_type in ELEMENTWISE_OPS and sum(dim > 1 for dim in array.shape) == 1


def attribute(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((a.i for a in node.attribute if a.name == name), default)
