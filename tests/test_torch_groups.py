"""module_channel_groups finds coupled channels in PyTorch terms; zero_module_groups makes them
exactly zero in the eval-mode model, and channelcut's zero-only cut then removes exactly them."""

from __future__ import annotations

import io
import warnings

import onnx
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import channelcut  # noqa: E402 - after the torch skip
from channelcut.torch_groups import (ModuleGroup, module_channel_groups,  # noqa: E402
                                     pick_groups, zero_module_groups)


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so a zero conv row alone would
    leave a BatchNorm shift behind; eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=generator) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=generator) - 0.5)
    return model.eval()


def cbr(cin: int, cout: int, kernel: int = 3, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups,
                                   bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class Residual(nn.Module):
    """stem -> [a -> b] + stem -> head: the stream's channels couple stem and b."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 8)
        self.a = cbr(8, 6)
        self.b = nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.head = nn.Conv2d(8, 5, 1)

    def forward(self, x):
        s = self.stem(x)
        return self.head(torch.relu(self.b(self.a(s)) + s))


class Concat(nn.Module):
    """Two branches concatenated, a BatchNorm on the concat (no conv to fold it into), a head."""

    def __init__(self) -> None:
        super().__init__()
        self.left = cbr(3, 4)
        self.right = cbr(3, 6, 1)
        self.norm = nn.BatchNorm2d(10)
        self.head = nn.Conv2d(10, 5, 1)

    def forward(self, x):
        return self.head(torch.relu(self.norm(torch.cat([self.left(x), self.right(x)], 1))))


class Depthwise(nn.Module):
    """MobileNetV2's inverted residual: expand -> depthwise -> project, with the skip."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 8)
        self.expand = cbr(8, 16, 1)
        self.depthwise = cbr(16, 16, 3, groups=16)
        self.project = nn.Sequential(nn.Conv2d(16, 8, 1, bias=False), nn.BatchNorm2d(8))
        self.head = nn.Conv2d(8, 5, 1)

    def forward(self, x):
        s = self.stem(x)
        return self.head(s + self.project(self.depthwise(self.expand(s))))


class Grouped(nn.Module):
    """ResNeXt's bottleneck core: a 4-group conv between two 1x1 convs."""

    def __init__(self) -> None:
        super().__init__()
        self.reduce = cbr(3, 8, 1)
        self.grouped = cbr(8, 12, 3, groups=4)
        self.expand = nn.Conv2d(12, 5, 1)

    def forward(self, x):
        return self.expand(self.grouped(self.reduce(x)))


class Mlp(nn.Module):
    """A transformer block's MLP: tokens -> LayerNorm -> fc1 -> GELU -> fc2 -> + -> LayerNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.norm1 = nn.LayerNorm(8)
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 8)
        self.norm2 = nn.LayerNorm(8)

    def forward(self, x):
        t = self.embed(x.flatten(2).transpose(1, 2))
        return self.norm2(t + self.fc2(nn.functional.gelu(self.fc1(self.norm1(t)))))


class Shared(nn.Module):
    """One conv applied to two inputs: its rows produce two tensors the graph keeps apart."""

    def __init__(self) -> None:
        super().__init__()
        self.left = nn.Conv2d(3, 4, 3, padding=1)
        self.right = nn.Conv2d(3, 4, 1)
        self.shared = nn.Conv2d(4, 6, 1)
        self.head = nn.Conv2d(12, 5, 1)

    def forward(self, x):
        a = torch.relu(self.shared(torch.relu(self.left(x))))
        b = torch.relu(self.shared(torch.relu(self.right(x))))
        return self.head(torch.cat([a, b], 1))


class Upsampling(nn.Module):
    """A U-Net decoder step: ConvTranspose2d -> BatchNorm, concatenated with a skip."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = cbr(3, 6)
        self.down = nn.Conv2d(6, 8, 2, stride=2)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.up_norm = nn.BatchNorm2d(4)
        self.dec = cbr(10, 6)
        self.head = nn.Conv2d(6, 5, 1)

    def forward(self, x):
        s = self.enc(x)
        up = torch.relu(self.up_norm(self.up(torch.relu(self.down(s)))))
        return self.head(self.dec(torch.cat([up, s], 1)))


SHAPES = {Residual: (1, 3, 8, 8), Concat: (1, 3, 8, 8), Depthwise: (1, 3, 8, 8),
          Grouped: (1, 3, 8, 8), Mlp: (1, 4, 3, 3), Shared: (1, 3, 8, 8),
          Upsampling: (1, 3, 8, 8)}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models: a second OpenMP thread gains nothing and spin-waits on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def grouped_models() -> dict[type, tuple[nn.Module, list[ModuleGroup]]]:
    """Each small model with its groups, exported once for the whole module."""
    found = {}
    for kind, shape in SHAPES.items():
        torch.manual_seed(0)
        model = randomize_norms(kind())
        found[kind] = (model, module_channel_groups(model, shape))
    return found


def groups_of(grouped_models, kind):
    model, groups = grouped_models[kind]
    fresh = randomize_norms(kind())
    fresh.load_state_dict(model.state_dict())
    return fresh, groups


def group_with(groups: list[ModuleGroup], row: tuple[str, int]) -> ModuleGroup:
    found = [g for g in groups if row in g.rows]
    assert len(found) == 1, f"{row} is in {len(found)} groups"
    return found[0]


def module_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every submodule's output on `x` (the last call's, for a module called twice)."""
    outputs = {}
    handles = [m.register_forward_hook(lambda _m, _i, out, name=name: outputs.__setitem__(
        name, out)) for name, m in model.named_modules() if name]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return outputs


def assert_exactly_zero(model: nn.Module, groups: list[ModuleGroup], shape) -> None:
    """Every zeroed row is exactly 0 after its layer and after its BatchNorm."""
    outputs = module_outputs(model, torch.randn(shape, generator=torch.Generator().manual_seed(1)))
    for group in groups:
        for name, channel in (*group.rows, *group.norms):
            out = outputs[name]
            values = out[..., channel] if isinstance(model.get_submodule(name), nn.Linear) \
                else out[:, channel]
            assert torch.count_nonzero(values) == 0, f"{name} channel {channel} is not zero"


def export(model: nn.Module, shape) -> channelcut.CutResult:
    """The TorchScript exporter's ONNX of the eval model, cut zero-only."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.zeros(shape),), buffer, dynamo=False,
                          opset_version=17, do_constant_folding=True)
    return channelcut.cut(onnx.load_from_string(buffer.getvalue()), fold=False)


def zero_and_cut(model: nn.Module, groups: list[ModuleGroup], shape) -> channelcut.CutResult:
    zero_module_groups(model, groups)
    assert_exactly_zero(model, groups, shape)
    result = export(model, shape)
    assert result.report.removed_groups == sum(g.parts for g in groups)
    assert all(check.cosine > 0.99999 for check in result.report.checks)
    return result


def test_residual_stream_is_one_group_with_both_producers_and_their_batchnorms(grouped_models):
    model, groups = groups_of(grouped_models, Residual)
    stream = group_with(groups, ("stem.0", 2))
    assert stream.rows == (("b.0", 2), ("stem.0", 2))
    assert stream.norms == (("b.1", 2), ("stem.1", 2))
    assert stream.prunable and stream.parts == 1
    assert group_with(groups, ("head", 0)).pinned  # a graph output
    inner = group_with(groups, ("a.0", 1))
    assert inner.rows == (("a.0", 1),) and inner.norms == (("a.1", 1),)
    zero_and_cut(model, [stream, inner], SHAPES[Residual])


def test_concat_slot_couples_the_branch_with_the_batchnorm_after_the_concat(grouped_models):
    model, groups = groups_of(grouped_models, Concat)
    right = group_with(groups, ("right.0", 1))
    # right's channel 1 is channel 4 + 1 of the concat: the unfolded BatchNorm's channel 5.
    assert set(right.norms) == {("right.1", 1), ("norm", 5)}
    left = group_with(groups, ("left.0", 3))
    assert ("norm", 3) in left.norms
    zero_and_cut(model, [right, left], SHAPES[Concat])


def test_depthwise_channel_joins_its_expand_row(grouped_models):
    model, groups = groups_of(grouped_models, Depthwise)
    hidden = group_with(groups, ("expand.0", 7))
    assert hidden.rows == (("depthwise.0", 7), ("expand.0", 7))
    stream = group_with(groups, ("stem.0", 0))
    assert stream.rows == (("project.0", 0), ("stem.0", 0))
    zero_and_cut(model, [hidden, stream], SHAPES[Depthwise])


def test_grouped_conv_groups_go_whole(grouped_models):
    model, groups = groups_of(grouped_models, Grouped)
    # conv group 1 of 4 reads reduce's channels 2, 3 and makes grouped's channels 3, 4, 5.
    whole = group_with(groups, ("reduce.0", 2))
    assert whole.rows == (("grouped.0", 3), ("grouped.0", 4), ("grouped.0", 5),
                          ("reduce.0", 2), ("reduce.0", 3))
    assert whole.parts == 5 and whole.prunable
    result = zero_and_cut(model, [whole], SHAPES[Grouped])
    grouped = next(n for n in result.model.graph.node if n.op_type == "Conv" and any(
        a.name == "group" and a.i > 1 for a in n.attribute))
    assert next(a.i for a in grouped.attribute if a.name == "group") == 3


def test_mlp_hidden_channels_are_prunable_and_layernorm_channels_are_pinned(grouped_models):
    model, groups = groups_of(grouped_models, Mlp)
    hidden = [g for g in groups if g.rows and g.rows[0][0] == "fc1"]
    assert len(hidden) == 16 and all(g.prunable and g.rows == (("fc1", g.rows[0][1]),)
                                     for g in hidden)
    stream = [g for g in groups if ("fc2", 0) in g.rows]
    assert len(stream) == 1 and stream[0].pinned  # it feeds LayerNorm
    assert set(stream[0].rows) == {("embed", 0), ("fc2", 0)}
    zero_and_cut(model, hidden[3:9], SHAPES[Mlp])


def test_a_layer_called_twice_joins_the_groups_its_rows_make(grouped_models):
    model, groups = groups_of(grouped_models, Shared)
    shared = group_with(groups, ("shared", 4))
    assert shared.parts == 2  # channel 4 of both calls' outputs
    assert len({tensor for tensor, _ in shared.channels}) >= 2
    zero_and_cut(model, [shared], SHAPES[Shared])


def test_conv_transpose_rows_and_their_batchnorm(grouped_models):
    model, groups = groups_of(grouped_models, Upsampling)
    up = group_with(groups, ("up", 2))
    assert up.norms == (("up_norm", 2),)
    zero_and_cut(model, [up, group_with(groups, ("down", 5))], SHAPES[Upsampling])


def test_grouped_conv_transpose_zeroes_only_its_own_output_channel():
    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(4, 6, 3, groups=2)
    zero_module_groups(layer, [ModuleGroup(rows=(("", 4),), norms=(), channels=(), parts=1,
                                           pinned=False)])
    out = layer(torch.randn(1, 4, 5, 5)).detach()
    assert torch.count_nonzero(out[:, 4]) == 0
    assert all(torch.count_nonzero(out[:, c]) > 0 for c in (0, 1, 2, 3, 5))


def test_unmapped_groups_cannot_be_zeroed():
    group = ModuleGroup(rows=(), norms=(), channels=(("t", 0),), parts=1, pinned=False,
                        unmapped=(("node_MatMul_3", 0),))
    assert not group.prunable
    with pytest.raises(ValueError, match="node_MatMul_3"):
        zero_module_groups(nn.Linear(2, 2), [group])


def test_pick_groups_is_seeded_prunable_only_and_never_empties_a_tensor(grouped_models):
    _, groups = grouped_models[Residual]
    prunable = [g for g in groups if g.prunable]
    picked = pick_groups(groups, 0.5, seed=3)
    assert picked == pick_groups(groups, 0.5, seed=3)
    assert picked != pick_groups(groups, 0.5, seed=4)
    assert len(picked) == round(0.5 * len(prunable)) and all(g.prunable for g in picked)
    everything = pick_groups(groups, 1.0)
    per_tensor = {}
    for g in groups:
        for tensor in {t for t, _ in g.channels}:
            per_tensor.setdefault(tensor, []).append(g in everything)
    assert all(not all(flags) for flags in per_tensor.values())


def test_module_channel_groups_keeps_the_training_flags():
    model = Residual().train()
    module_channel_groups(model, SHAPES[Residual])
    assert all(m.training for m in model.modules())
