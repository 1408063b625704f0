import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from moomtl.models.base import MultiTaskModel
from moomtl.models.lenet import hps_lenet
from moomtl.models.mdmtn import hps_cifar10mnist, mdmtn_cifar10mnist, mdmtn_multimnist
from moomtl.sparsity.grouping import (
    InputSelect,
    RegularizedGroup,
    compress_model,
    regularized_groups,
    rows_to_weight,
    select_modules,
    weight_to_rows,
)
from moomtl.sparsity.metrics import sparsity_report


class ToyMDMTN(MultiTaskModel):
    """Trunk + per-task monitors reading the raw input + heads (the MDMTN layout, small)."""

    def __init__(self, tasks: tuple[str, ...] = ("a", "b")) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU())
        self.monitors = nn.ModuleDict(
            {t: nn.Sequential(nn.Linear(8, 7), nn.ReLU(), nn.Linear(7, 5)) for t in tasks}
        )
        self.heads = nn.ModuleDict({t: nn.Linear(5, 3) for t in tasks})
        self.task_names = tasks

    def encode(self, x: Tensor) -> Tensor:
        return self.trunk(x.flatten(1))

    def decode(self, z: Tensor, x: Tensor) -> dict[str, Tensor]:
        return {t: self.heads[t](z + self.monitors[t](x.flatten(1))) for t in self.task_names}

    def shared_modules(self) -> nn.Module:
        return self.trunk


def zero_rows_(group: RegularizedGroup, idx: list[int]) -> None:
    rows = group.rows().detach().clone()
    rows[idx] = 0
    group.set_rows(rows)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# --- reshapes ---------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 4), st.integers(1, 4), st.lists(st.integers(1, 3), min_size=0, max_size=3),
    st.sampled_from(["input", "output"]),
)
def test_rows_round_trip(c_out: int, c_in: int, kernel: list[int], by: str) -> None:
    w = torch.randn(c_out, c_in, *kernel)
    rows = weight_to_rows(w, by)
    assert rows.shape[0] == (c_in if by == "input" else c_out)
    assert torch.equal(rows_to_weight(rows, w.shape, by), w)


def test_conv_input_rows_are_per_channel_slices() -> None:
    conv = nn.Conv2d(3, 4, kernel_size=(2, 3))
    rows = RegularizedGroup("c", conv).rows()
    assert rows.shape == (3, 4 * 2 * 3)
    for c in range(3):
        assert torch.equal(rows[c], conv.weight[:, c].reshape(-1))
    # The authors' `view(C_in, -1)` splits memory without transposing, so its "channel 1" mixes the
    # tail of filter 1 with the head of filter 2: not a channel at all.
    assert not torch.equal(conv.weight.detach().view(3, -1)[1], rows[1].detach())
    out_rows = RegularizedGroup("c", conv, by="output").rows()
    for o in range(4):
        assert torch.equal(out_rows[o], conv.weight[o].reshape(-1))


def test_linear_rows() -> None:
    lin = nn.Linear(5, 3)
    assert torch.equal(RegularizedGroup("l", lin).rows(), lin.weight.T)
    assert torch.equal(RegularizedGroup("l", lin, by="output").rows(), lin.weight)


def test_zero_input_row_disconnects_that_input() -> None:
    # Semantics: a zero "input" row of a conv (linear) means the layer ignores that channel (feature).
    torch.manual_seed(0)
    conv, lin = nn.Conv2d(3, 4, 3), nn.Linear(5, 2)
    zero_rows_(RegularizedGroup("c", conv), [1])
    zero_rows_(RegularizedGroup("l", lin), [0, 3])
    x = torch.randn(2, 3, 6, 6)
    x2 = x.clone()
    x2[:, 1] += 10.0
    torch.testing.assert_close(conv(x), conv(x2))
    assert not torch.allclose(conv(x), conv(x + 1.0))
    v = torch.randn(4, 5)
    v2 = v.clone()
    v2[:, [0, 3]] = 7.0
    torch.testing.assert_close(lin(v), lin(v2))


def test_set_rows_is_in_place_and_rows_are_differentiable() -> None:
    conv = nn.Conv2d(2, 3, 3)
    weight, ptr = conv.weight, conv.weight.data_ptr()
    g = RegularizedGroup("c", conv)
    new = torch.randn(g.n_rows, g.row_size)
    g.set_rows(new)
    assert conv.weight is weight and conv.weight.data_ptr() == ptr
    assert torch.equal(g.rows().detach(), new)
    g.rows().pow(2).sum().backward()
    torch.testing.assert_close(conv.weight.grad, 2 * conv.weight.detach())
    with pytest.raises(ValueError, match="expected rows of shape"):
        g.set_rows(torch.zeros(3, 3))


@pytest.mark.parametrize(
    "module", [nn.Conv2d(4, 4, 3, groups=2), nn.ConvTranspose2d(2, 3, 3), nn.BatchNorm1d(3), nn.ReLU()]
)
def test_group_rejects_unsupported_modules(module: nn.Module) -> None:
    with pytest.raises(ValueError, match="only nn.Linear"):
        RegularizedGroup("m", module)


def test_group_rejects_bad_by() -> None:
    with pytest.raises(ValueError, match="by must be"):
        RegularizedGroup("l", nn.Linear(2, 2), by="rows")  # type: ignore[arg-type]


# --- selection --------------------------------------------------------------------------------------


def test_default_selection_on_hps_lenet() -> None:
    model = hps_lenet()
    assert [n for n, _ in select_modules(model)] == ["encoder.conv2", "encoder.fc"]
    assert [n for n, _ in select_modules(model, skip_input_layers=False)] == [
        "encoder.conv1", "encoder.conv2", "encoder.fc",
    ]
    traced = select_modules(model, example_input=torch.zeros(2, 1, 28, 28))
    assert [n for n, _ in traced] == ["encoder.conv2", "encoder.fc"]
    groups = regularized_groups(model)
    assert [(g.name, g.n_rows) for g in groups] == [("encoder.conv2", 10), ("encoder.fc", 320)]


def test_default_selection_on_mdmtn_layout() -> None:
    model = ToyMDMTN()
    expected = ["trunk.2", "monitors.a.2", "monitors.b.2"]
    assert [n for n, _ in select_modules(model)] == expected
    # Exact detection by tracing: the flattened input is a view of x, so the first layers are found.
    assert [n for n, _ in select_modules(model, example_input=torch.randn(3, 2, 4))] == expected
    everything = [n for n, _ in select_modules(model, skip_input_layers=False)]
    assert everything == ["trunk.0", "trunk.2", "monitors.a.0", "monitors.a.2", "monitors.b.0", "monitors.b.2"]
    assert not any("heads" in n for n in everything)


def test_include_exclude_patterns() -> None:
    model = ToyMDMTN()
    assert [n for n, _ in select_modules(model, include="monitors", skip_input_layers=False)] == [
        "monitors.a.0", "monitors.a.2", "monitors.b.0", "monitors.b.2",
    ]
    assert [n for n, _ in select_modules(model, include=["heads.*"], skip_input_layers=False)] == [
        "heads.a", "heads.b",
    ]
    assert [n for n, _ in select_modules(model, exclude="monitors.b")] == ["trunk.2", "monitors.a.2"]
    assert [n for n, _ in select_modules(model, include="*", exclude=["*.0", "heads"])] == [
        "trunk.2", "monitors.a.2", "monitors.b.2",
    ]
    groups = regularized_groups(model, linear_by="output")
    assert all(g.by == "output" for g in groups)


def test_plain_module_selection() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 3, 8, 8))
    assert [n for n, _ in select_modules(model)] == ["2", "4"]
    assert [n for n, _ in select_modules(model, skip_input_layers=False)] == ["0", "2", "4"]


# --- compressed export ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compress_linear_chain(seed: int) -> None:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(10, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 6), nn.BatchNorm1d(6), nn.Tanh(),
        nn.Linear(6, 3),
    ).double()
    model[4].running_mean.uniform_(-1, 1)
    model[4].running_var.uniform_(0.5, 2)
    groups = regularized_groups(model)  # layers "3" and "6" (layer "0" reads the input)
    zero_rows_(groups[0], [0, 2, 5])
    zero_rows_(groups[1], [1, 4])
    model.eval()
    small = compress_model(model, groups).eval()
    x = torch.randn(16, 10, dtype=torch.float64)
    torch.testing.assert_close(small(x), model(x), rtol=0, atol=1e-12)
    assert (small[0].out_features, small[3].in_features, small[3].out_features) == (5, 5, 4)
    assert (small[4].num_features, small[6].in_features) == (4, 4)
    assert n_params(small) == n_params(model) - 3 * (10 + 1) - 3 * 6 - 2 * (5 + 1) - 2 * 2 - 2 * 3
    # The original is untouched.
    assert model[0].out_features == 8 and model[4].num_features == 6


def test_compress_conv_chain_and_flatten() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 5, 3), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 2 * 2, 4),
    ).double()
    model[1].running_mean.uniform_(-1, 1)
    model[1].running_var.uniform_(0.5, 2)
    conv2, fc = regularized_groups(model)
    assert (conv2.name, fc.name) == ("4", "7")
    zero_rows_(conv2, [1, 4])
    # Features of conv2's channel 3 are all unused (→ channel removed); channel 0 only partly.
    zero_rows_(fc, [12, 13, 14, 15, 0, 1])
    model.eval()
    small = compress_model(model, [conv2, fc]).eval()
    x = torch.randn(4, 3, 10, 10, dtype=torch.float64)
    torch.testing.assert_close(small(x), model(x), rtol=0, atol=1e-12)
    assert (small[0].out_channels, small[1].num_features, small[4].in_channels) == (4, 4, 4)
    # Channel 3 of conv2 goes; the two unused features of channel 0 are skipped by input selection.
    assert small[4].out_channels == 4
    assert isinstance(small[7], InputSelect) and small[7].module.in_features == 14


def test_compress_conv_flatten_batchnorm1d_linear() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.BatchNorm1d(3 * 4), nn.Linear(12, 2)
    ).double()
    model[3].running_mean.uniform_(-1, 1)
    model[3].running_var.uniform_(0.5, 2)
    (fc,) = regularized_groups(model)
    zero_rows_(fc, [4, 5, 6, 7])  # all of channel 1
    model.eval()
    small = compress_model(model, [fc]).eval()
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(small(x), model(x), rtol=0, atol=1e-12)
    assert (small[0].out_channels, small[3].num_features, small[4].in_features) == (2, 8, 8)


def test_compress_hps_lenet_uses_input_selection() -> None:
    torch.manual_seed(0)
    model = hps_lenet()
    conv2, fc = regularized_groups(model)
    zero_rows_(conv2, [0, 7])
    pruned_fc = list(range(0, 320, 3))
    zero_rows_(fc, pruned_fc)
    model.eval()
    small = compress_model(model, [conv2, fc]).eval()
    assert isinstance(small.encoder.fc, InputSelect) and isinstance(small.encoder.conv2, InputSelect)
    assert small.encoder.fc.module.in_features == 320 - len(pruned_fc)
    assert n_params(small) == n_params(model) - 2 * 20 * 25 - len(pruned_fc) * 50
    x = torch.randn(5, 1, 28, 28)
    out, ref = small(x), model(x)
    for t in ref:
        torch.testing.assert_close(out[t], ref[t], rtol=1e-5, atol=1e-6)


def test_compress_mdmtn_layout_and_output_groups_are_ignored() -> None:
    torch.manual_seed(0)
    model = ToyMDMTN().double()
    groups = regularized_groups(model)
    zero_rows_(groups[0], [1, 2])  # trunk.2 inputs → trunk.0 outputs go
    zero_rows_(groups[1], [0, 6])  # monitors.a.2
    out_group = RegularizedGroup("heads.b", model.heads["b"], by="output")
    zero_rows_(out_group, [0])
    model.eval()
    small = compress_model(model, [*groups, out_group]).eval()
    assert small.trunk[0].out_features == 4 and small.monitors["a"][0].out_features == 5
    assert small.monitors["b"][0].out_features == 7 and small.heads["b"].out_features == 3
    x = torch.randn(6, 2, 4, dtype=torch.float64)
    out, ref = small(x), model(x)
    for t in ref:
        torch.testing.assert_close(out[t], ref[t], rtol=0, atol=1e-12)


@pytest.mark.parametrize("builder, shape", [
    (mdmtn_multimnist, (1, 28, 28)), (mdmtn_cifar10mnist, (3, 32, 32)), (hps_cifar10mnist, (3, 32, 32)),
])
def test_compress_paper_networks(builder, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = builder().double()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    groups = regularized_groups(model)
    g = torch.Generator().manual_seed(0)
    for grp in groups:
        idx = (torch.rand(grp.n_rows, generator=g) < 0.6).nonzero().flatten().tolist()
        zero_rows_(grp, idx)
    model.eval()
    small = compress_model(model, groups).eval()
    x = torch.randn(3, *shape, dtype=torch.float64)
    out, ref = small(x), model(x)
    for t in ref:
        torch.testing.assert_close(out[t], ref[t], rtol=0, atol=1e-12)
    # Every zero row's scalars are gone, and more where a producing unit could be removed too.
    assert n_params(small) <= sparsity_report(model, groups).effective_parameters


def test_compress_all_rows_pruned_keeps_a_zero_unit() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).double()
    (g,) = regularized_groups(model)
    zero_rows_(g, [0, 1, 2])
    small = compress_model(model, [g])
    x = torch.randn(3, 4, dtype=torch.float64)
    torch.testing.assert_close(small(x), model(x))
    assert small[2].in_features == 1


def test_compress_rejects_foreign_groups() -> None:
    g = RegularizedGroup("0", nn.Linear(2, 2))
    with pytest.raises(ValueError, match="does not belong"):
        compress_model(nn.Sequential(nn.Linear(2, 2)), [g])
