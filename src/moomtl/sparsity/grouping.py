"""Which weights GrOWL regularizes, seen as matrices whose rows are the groups, and the compressed export.

A group is one row of a matrix read from a layer's weight:

- ``nn.Linear`` (weight ``[out, in]``): by default one group per **input feature**, i.e. the rows of
  ``Wᵀ`` (a zero row means the feature is unused and the unit that produces it can be removed);
  ``by="output"`` gives one group per output unit (the rows of ``W``).
- ``nn.Conv{1,2,3}d`` (weight ``[C_out, C_in, *k]``): by default one group per **input channel**,
  ``W.transpose(0, 1).reshape(C_in, C_out·Πk)``, so row ``c`` is exactly ``W[:, c]`` flattened;
  ``by="output"`` gives one group per filter, ``W.reshape(C_out, -1)``. (The authors' code uses
  ``W.view(C_in, -1)``, which splits the memory of ``W`` without transposing and so mixes filters
  of several output channels in each "channel" row; we permute first.)

:class:`RegularizedGroup` reads this matrix from the parameter (differentiably, for the penalty) and
writes a new one back in place (for prox steps and tying), so optimizers keep their references.
:func:`select_modules` chooses the layers by qualified-name patterns; :func:`compress_model` exports a
smaller model with the pruned inputs removed.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd

GroupBy = Literal["input", "output"]
_GROUP_BY = ("input", "output")


# --- pure tensor reshapes ---------------------------------------------------------------------------


def weight_to_rows(weight: Tensor, by: GroupBy = "input") -> Tensor:
    """``[out, in, *k]`` weight → ``[n_groups, group_size]`` rows (differentiable).

    ``by="input"``: row ``c`` is ``weight[:, c].flatten()``; ``by="output"``: row ``o`` is
    ``weight[o].flatten()``.

    >>> w = torch.arange(12.0).reshape(2, 3, 2)  # 2 filters, 3 input channels, kernel 2
    >>> weight_to_rows(w)[1]  # channel 1 of both filters
    tensor([2., 3., 8., 9.])
    """
    if weight.ndim < 2:
        raise ValueError(f"expected a weight with ≥ 2 dims ([out, in, ...]), got shape {tuple(weight.shape)}")
    if by == "input":
        return weight.transpose(0, 1).reshape(weight.shape[1], -1)
    if by == "output":
        return weight.reshape(weight.shape[0], -1)
    raise ValueError(f"by must be one of {_GROUP_BY}, got {by!r}")


def rows_to_weight(rows: Tensor, shape: Sequence[int] | torch.Size, by: GroupBy = "input") -> Tensor:
    """Inverse of :func:`weight_to_rows` for a weight of the given ``shape``."""
    shape = tuple(shape)
    if by == "input":
        expected = (shape[1], rows.numel() // max(shape[1], 1))
        if tuple(rows.shape) != expected or rows.numel() != _numel(shape):
            raise ValueError(f"rows of shape {tuple(rows.shape)} do not fit a weight of shape {shape} ({by})")
        return rows.reshape(shape[1], shape[0], *shape[2:]).transpose(0, 1)
    if by == "output":
        if rows.shape[0] != shape[0] or rows.numel() != _numel(shape):
            raise ValueError(f"rows of shape {tuple(rows.shape)} do not fit a weight of shape {shape} ({by})")
        return rows.reshape(shape)
    raise ValueError(f"by must be one of {_GROUP_BY}, got {by!r}")


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


# --- groups -----------------------------------------------------------------------------------------


def is_groupable(module: nn.Module) -> bool:
    """``nn.Linear`` or a non-transposed, ungrouped convolution (``groups == 1``)."""
    if isinstance(module, nn.Linear):
        return True
    return isinstance(module, _ConvNd) and not module.transposed and module.groups == 1


@dataclass(eq=False)
class RegularizedGroup:
    """The weight of one layer seen as a matrix of groups (rows).

    Args:
        name: the module's qualified name in the model (used to find it again, e.g. in a copy).
        module: an ``nn.Linear`` or ungrouped ``nn.ConvNd``; only its ``weight`` is grouped (a bias
            belongs to output units, not to input features).
        by: ``"input"`` (input features / channels, the default) or ``"output"`` (units / filters).

    >>> g = RegularizedGroup("fc", nn.Linear(3, 2))
    >>> g.rows().shape  # one row per input feature
    torch.Size([3, 2])
    """

    name: str
    module: nn.Module
    by: GroupBy = "input"

    def __post_init__(self) -> None:
        if not is_groupable(self.module):
            raise ValueError(
                f"{self.name or 'module'}: only nn.Linear and ungrouped, non-transposed convolutions can be "
                f"grouped, got {type(self.module).__name__}"
            )
        if self.by not in _GROUP_BY:
            raise ValueError(f"by must be one of {_GROUP_BY}, got {self.by!r}")

    @property
    def weight(self) -> nn.Parameter:
        return self.module.weight  # type: ignore[return-value]

    @property
    def n_rows(self) -> int:
        return int(self.weight.shape[1] if self.by == "input" else self.weight.shape[0])

    @property
    def row_size(self) -> int:
        return self.weight.numel() // max(self.n_rows, 1)

    def rows(self) -> Tensor:
        """The ``[n_rows, row_size]`` matrix, differentiable w.r.t. the weight."""
        return weight_to_rows(self.weight, self.by)

    @torch.no_grad()
    def set_rows(self, rows: Tensor) -> None:
        """Write ``rows`` back into the weight, in place (the parameter object is kept)."""
        if tuple(rows.shape) != (self.n_rows, self.row_size):
            raise ValueError(f"{self.name}: expected rows of shape {(self.n_rows, self.row_size)}, "
                             f"got {tuple(rows.shape)}")
        w = self.weight
        w.copy_(rows_to_weight(rows.to(device=w.device, dtype=w.dtype), w.shape, self.by))

    @torch.no_grad()
    def zero_mask(self) -> Tensor:
        """Boolean ``[n_rows]``: rows that are exactly zero (pruned)."""
        return (self.rows() == 0).all(dim=1)

    def __repr__(self) -> str:
        return f"RegularizedGroup({self.name!r}, {type(self.module).__name__}, by={self.by!r}, " \
               f"rows={self.n_rows}×{self.row_size})"


# --- module selection -------------------------------------------------------------------------------


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix and name else prefix or name


def _matches(name: str, patterns: Sequence[str]) -> bool:
    """Glob match on the qualified name or on any of its ancestors (``"encoder"`` matches ``"encoder.fc"``)."""
    return any(fnmatchcase(name, p) or fnmatchcase(name, p + ".*") for p in patterns)


def _as_patterns(p: str | Sequence[str] | None) -> tuple[str, ...] | None:
    if p is None:
        return None
    return (p,) if isinstance(p, str) else tuple(p)


def _name_of(model: nn.Module, module: nn.Module) -> str | None:
    for name, m in model.named_modules():
        if m is module:
            return name
    return None


def _monitor_roots(model: nn.Module) -> list[str]:
    """Top-most modules whose own name contains "monitor"; a container (ModuleDict/ModuleList) of
    monitors contributes its children, one root per task."""
    roots: list[str] = []
    for name, m in model.named_modules():
        if not name or "monitor" not in name.rsplit(".", 1)[-1].lower():
            continue
        if any(name == r or name.startswith(r + ".") for r in roots):
            continue
        if isinstance(m, nn.ModuleDict | nn.ModuleList):
            roots.extend(_join(name, c) for c, _ in m.named_children())
        else:
            roots.append(name)
    return roots


def _first_groupable(model: nn.Module, root: str) -> str | None:
    sub = model.get_submodule(root) if root else model
    for name, m in sub.named_modules():
        if is_groupable(m):
            return _join(root, name)
    return None


def _input_layers_structural(model: nn.Module, shared_root: str | None, monitor_roots: list[str]) -> set[str]:
    roots = [*([] if shared_root is None else [shared_root]), *monitor_roots]
    if shared_root is None and not monitor_roots:
        roots = [""]
    return {n for n in (_first_groupable(model, r) for r in roots) if n is not None}


@torch.no_grad()
def _input_layers_traced(model: nn.Module, example_input: Tensor) -> set[str]:
    """Layers whose input shares memory with the raw input (so reshapes/views of it count too)."""
    found: set[str] = set()
    storage = example_input.untyped_storage().data_ptr()
    handles = []

    def hook_for(name: str):
        def hook(_module: nn.Module, args: tuple) -> None:
            for a in args:
                if isinstance(a, Tensor) and a.untyped_storage().data_ptr() == storage:
                    found.add(name)

        return hook

    for name, m in model.named_modules():
        if is_groupable(m):
            handles.append(m.register_forward_pre_hook(hook_for(name)))
    was_training = model.training
    try:
        model.eval()
        model(example_input)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return found


def select_modules(
    model: nn.Module,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    *,
    skip_input_layers: bool = True,
    example_input: Tensor | None = None,
) -> list[tuple[str, nn.Module]]:
    """The ``(qualified name, module)`` pairs of the layers to regularize, in registration order.

    Only ``nn.Linear`` and ungrouped convolutions are candidates. ``include`` / ``exclude`` are glob
    patterns on qualified names; a pattern also matches everything below it (``"encoder"`` selects
    ``"encoder.fc"``).

    Default (``include=None``): for a multi-task model (one with ``shared_modules()``), the layers of
    the shared trunk and of the MDMTN monitors (modules whose name contains ``"monitor"``); any module
    whose name contains ``"head"`` is left out (task heads are not regularized); for any other module,
    every candidate layer.

    ``skip_input_layers`` (default ``True``, as in the authors' setup: "input layers and task heads are
    not regularized") also leaves out the layers that read the raw input. With ``example_input`` they
    are found exactly, by running the model once and marking layers whose input shares memory with it;
    without it, the first candidate layer in registration order of the trunk and of each monitor (of
    the whole model otherwise) is taken as its input layer.

    >>> from moomtl.models.lenet import hps_lenet
    >>> [n for n, _ in select_modules(hps_lenet())]
    ['encoder.conv2', 'encoder.fc']
    """
    include_p, exclude_p = _as_patterns(include), _as_patterns(exclude) or ()
    shared_root: str | None = None
    monitors: list[str] = []
    shared_fn = getattr(model, "shared_modules", None)
    if callable(shared_fn):
        shared = shared_fn()
        shared_root = _name_of(model, shared)
        if shared_root is None:
            raise ValueError("model.shared_modules() is not a submodule of the model")
        monitors = _monitor_roots(model)
    if include_p is None:
        if shared_root is None:
            include_p = ("*",)
        else:
            include_p = tuple("*" if r == "" else r for r in (shared_root, *monitors))
            exclude_p = (*exclude_p, "*head*")
    input_layers: set[str] = set()
    if skip_input_layers:
        input_layers = (
            _input_layers_traced(model, example_input)
            if example_input is not None
            else _input_layers_structural(model, shared_root, monitors)
        )
    out = []
    for name, m in model.named_modules():
        if not is_groupable(m) or name in input_layers:
            continue
        if _matches(name, include_p) and not _matches(name, exclude_p):
            out.append((name, m))
    return out


def regularized_groups(
    model: nn.Module,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    *,
    linear_by: GroupBy = "input",
    conv_by: GroupBy = "input",
    skip_input_layers: bool = True,
    example_input: Tensor | None = None,
) -> list[RegularizedGroup]:
    """:class:`RegularizedGroup` objects for :func:`select_modules` (same arguments)."""
    mods = select_modules(
        model, include, exclude, skip_input_layers=skip_input_layers, example_input=example_input
    )
    return [RegularizedGroup(n, m, linear_by if isinstance(m, nn.Linear) else conv_by) for n, m in mods]


# --- compressed export ------------------------------------------------------------------------------

# Modules that act on each feature/channel separately and keep their count: removing a unit before
# them removes the same unit after them.
_PASSTHROUGH = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh,
    nn.Sigmoid, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class InputSelect(nn.Module):
    """``module(x.index_select(dim, index))``: a layer that reads only the kept inputs.

    Used by :func:`compress_model` where the unit producing a pruned input cannot be removed (the
    producer is not visible in a plain chain); the weight still shrinks to the kept inputs.
    """

    def __init__(self, module: nn.Module, index: Tensor, dim: int) -> None:
        super().__init__()
        self.module = module
        self.dim = dim
        self.register_buffer("index", index.clone())

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x.index_select(self.dim, self.index))


def _slice_layer(layer: nn.Module, out_idx: Tensor | None, in_idx: Tensor | None) -> nn.Module:
    w = layer.weight.detach()
    if out_idx is not None:
        w = w.index_select(0, out_idx.to(w.device))
    if in_idx is not None:
        w = w.index_select(1, in_idx.to(w.device))
    b = layer.bias
    if b is not None:
        b = b.detach()
        if out_idx is not None:
            b = b.index_select(0, out_idx.to(b.device))
    kw = {"device": w.device, "dtype": w.dtype}
    new: nn.Module
    if isinstance(layer, nn.Linear):
        new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, **kw)
    else:
        assert isinstance(layer, _ConvNd)
        new = type(layer)(
            w.shape[1], w.shape[0], layer.kernel_size, stride=layer.stride, padding=layer.padding,
            dilation=layer.dilation, groups=1, bias=b is not None, padding_mode=layer.padding_mode, **kw,
        )
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
            new.bias.requires_grad_(layer.bias.requires_grad)
    new.weight.requires_grad_(layer.weight.requires_grad)
    new.train(layer.training)
    return new


def _slice_batchnorm(bn: nn.Module, idx: Tensor) -> nn.Module:
    new = copy.deepcopy(bn)
    new.num_features = int(idx.numel())
    with torch.no_grad():
        for pname in ("weight", "bias"):
            p = getattr(bn, pname)
            if p is not None:
                setattr(new, pname, nn.Parameter(p.detach().index_select(0, idx.to(p.device)),
                                                 requires_grad=p.requires_grad))
        for bname in ("running_mean", "running_var"):
            buf = getattr(bn, bname)
            if buf is not None:
                setattr(new, bname, buf.index_select(0, idx.to(buf.device)))
    return new


def _get(root: nn.Module, name: str) -> nn.Module | None:
    try:
        return root.get_submodule(name) if name else root
    except AttributeError:
        return None


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, module)


def _nonempty(mask: Tensor) -> Tensor:
    """Indices of ``mask``; keep one (all-zero) unit rather than build a zero-size layer."""
    idx = mask.nonzero().flatten()
    return idx if idx.numel() else torch.zeros(1, dtype=torch.long, device=mask.device)


@dataclass
class _Chain:
    producer: str
    channels_keep: Tensor  # producer outputs kept
    consumer_columns: Tensor  # the consumer's original input indices that remain, in order
    bn_channels: list[str]  # BatchNorms on the producer's outputs (sliced by channels_keep)
    bn_features: list[str]  # BatchNorm1d on flattened features (sliced by consumer_columns)


def _find_chain(seq_name: str, seq: nn.Sequential, j: int, in_mask: Tensor) -> _Chain | None:
    """Walk back from child ``j`` of ``seq`` (a consumer whose inputs ``~in_mask`` are pruned) to the
    layer producing its input, through per-unit modules only."""
    children = list(seq.named_children())
    consumer = children[j][1]
    bn_channels: list[str] = []
    bn_features: list[str] = []
    flatten_seen = False
    for k in range(j - 1, -1, -1):
        name, m = children[k]
        full = _join(seq_name, name)
        if isinstance(m, _PASSTHROUGH):
            continue
        if isinstance(m, _BATCHNORM):
            # Walking backwards: before the Flatten is met, a BatchNorm normalizes the consumer's input
            # features; after it, the producer's channels.
            (bn_channels if flatten_seen else bn_features).append(full)
            continue
        if isinstance(m, nn.Flatten):
            if flatten_seen or not isinstance(consumer, nn.Linear) or m.start_dim != 1 or m.end_dim != -1:
                return None
            flatten_seen = True
            continue
        if not is_groupable(m):
            return None
        if isinstance(consumer, nn.Linear) and not flatten_seen:
            if not isinstance(m, nn.Linear) or m.out_features != consumer.in_features:
                return None
            keep = _nonempty(in_mask)
            return _Chain(full, keep, keep, bn_channels, bn_features)
        if isinstance(consumer, nn.Linear):  # conv → (per-channel ops) → flatten → linear
            if not isinstance(m, _ConvNd):
                return None
            c = m.out_channels
            if consumer.in_features % c:
                return None
            # Flatten in NCHW order: feature c·S + s is channel c, position s. A channel can go only
            # if all its S features are unused.
            per_channel = in_mask.reshape(c, consumer.in_features // c)
            channels = _nonempty(per_channel.any(dim=1))
            feats = (channels.unsqueeze(1) * per_channel.shape[1]
                     + torch.arange(per_channel.shape[1], device=channels.device)).flatten()
            return _Chain(full, channels, feats, bn_channels, bn_features)
        # conv consumer
        if not isinstance(m, _ConvNd) or m.out_channels != consumer.in_channels:
            return None
        keep = _nonempty(in_mask)
        return _Chain(full, keep, keep, bn_channels, bn_features)
    return None


def compress_model(model: nn.Module, groups: Sequence[RegularizedGroup]) -> nn.Module:
    """A smaller copy of ``model`` whose pruned inputs are removed; its outputs equal ``model``'s.

    Only ``by="input"`` groups are used (a zero output row still emits its bias, so it cannot simply
    be dropped). For a layer whose input feature/channel ``c`` is a zero row:

    - inside an ``nn.Sequential`` chain ``Linear → … → Linear`` or ``Conv → … → Conv`` (with only
      per-unit modules between: activations, dropout, pooling, BatchNorm), unit ``c`` of the producing
      layer is removed too (its weight row, bias and BatchNorm entries), and the consumer shrinks;
      for ``Conv → … → Flatten → Linear`` a conv channel is removed when all its flattened features
      are unused;
    - otherwise (e.g. a layer called from a custom ``forward``, as in the HPS LeNet or MDMTN) the
      layer is replaced by :class:`InputSelect` around a layer with only the kept input columns.

    ``model`` is not modified. Outputs agree up to float rounding (the removed terms are exact zeros).
    """
    new = copy.deepcopy(model)
    in_masks: dict[str, Tensor] = {}
    for g in groups:
        if g.by != "input":
            continue
        if _get(model, g.name) is not g.module:
            raise ValueError(f"group {g.name!r} does not belong to this model")
        keep = ~g.zero_mask()
        if not bool(keep.all()):
            in_masks[g.name] = keep
    out_keep: dict[str, Tensor] = {}
    in_keep_chain: dict[str, Tensor] = {}
    bn_keep: dict[str, Tensor] = {}
    for seq_name, seq in new.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        for j, (cname, _child) in enumerate(seq.named_children()):
            full = _join(seq_name, cname)
            if full not in in_masks:
                continue
            chain = _find_chain(seq_name, seq, j, in_masks[full])
            if chain is None or chain.producer in out_keep:
                continue
            out_keep[chain.producer] = chain.channels_keep
            in_keep_chain[full] = chain.consumer_columns
            bn_keep.update(dict.fromkeys(chain.bn_channels, chain.channels_keep))
            bn_keep.update(dict.fromkeys(chain.bn_features, chain.consumer_columns))
    for name in sorted(set(in_masks) | set(out_keep)):
        layer = new.get_submodule(name) if name else new
        out_idx = out_keep.get(name)
        dim = -1 if isinstance(layer, nn.Linear) else 1
        replacement: nn.Module
        if name not in in_masks:  # only a producer: its pruned units go
            replacement = _slice_layer(layer, out_idx, None)
        elif name not in in_keep_chain:
            # Inputs are pruned, but their producer stays: read only the kept inputs.
            in_idx = _nonempty(in_masks[name])
            replacement = InputSelect(_slice_layer(layer, out_idx, in_idx), in_idx, dim)
        else:
            # In a chain the producer lost its pruned units: keep the consumer's matching columns.
            # Some of them can still be zero (conv → flatten → linear keeps a channel if any of its
            # features is used): those are skipped by selecting inputs.
            cols = in_keep_chain[name]
            used = in_masks[name][cols]
            if bool(used.all()) or not bool(used.any()):  # (none used: one zero unit was kept)
                replacement = _slice_layer(layer, out_idx, cols)
            else:
                pos = _nonempty(used)
                replacement = InputSelect(_slice_layer(layer, out_idx, cols[pos]), pos, dim)
        if name:
            _set_submodule(new, name, replacement)
        else:  # the model is a single layer
            new = replacement
    for name, idx in bn_keep.items():
        _set_submodule(new, name, _slice_batchnorm(new.get_submodule(name), idx))
    return new

