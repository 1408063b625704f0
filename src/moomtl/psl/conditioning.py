"""Preference conditioning of any :class:`~moomtl.models.base.MultiTaskModel`: one network whose
parameters are a function of the preference λ (Pareto-set learning).

A conditioned layer is a ``Linear``/``Conv*d`` layer of the base model; for the current λ its
*effective* parameters are computed from its own ones and a small hypernetwork, and the base model's
``encode``/``decode`` run with them (``torch.func.functional_call``). Two conditionings:

* **FiLM** (encoder): one MLP ``λ → (γ_l, β_l)`` for every encoder layer ``l``, a per-output-channel
  scale and shift of the layer's pre-activation output, ``y ↦ y ⊙ (1 + γ) + β``. It is applied as the
  equal parameter change ``W ↦ (1 + γ) ⊙ W``, ``b ↦ (1 + γ) ⊙ b + β`` (a layer without a bias gets the
  scale only), so a specialised model is a plain model with those parameters.
* **Low rank** (heads, and ``lora`` for the encoder): per layer, ``c = MLP(λ) ∈ ℝ^r`` and
  ``W ↦ W + U diag(c) Vᵀ`` (``W`` flattened to ``[out, in·k·k]``), ``b ↦ b + B c``; a hypernetwork that
  outputs a rank-``r`` update of the layer (Navon et al. 2021 output whole heads; a low-rank update keeps
  the hypernetwork small for any head size).

Both start as the identity: the FiLM MLP's last layer and ``U``, ``B`` are zero at initialization, so
the conditioned model computes exactly the base model until training moves them (the gradient reaches
them at once: ``∂L/∂U = (∂L/∂W) V diag(c)`` with ``c ≠ 0``, and the FiLM output layer's input is the
non-zero hidden activation).

Which parameters are shared follows the base model: encoder layers are those whose parameters are all
shared (``base.shared_parameters()``), head layers those with none shared. Encoder conditioning is
shared; each head layer has its own hypernetwork, so it is task-specific like the layer it modulates
(gradient methods such as EPO see the same split of parameters as for the base model).

Pure math (:func:`film_parameters`, :func:`low_rank_parameters`) is separate from the modules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from moomtl.models.base import MultiTaskModel

#: Layer types that can be conditioned (their ``weight`` is ``[out, in, *kernel]``, ``bias`` ``[out]``).
CONDITIONABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


# --- pure math ------------------------------------------------------------------------------------
def film_parameters(weight: Tensor, bias: Tensor | None, gamma: Tensor, beta: Tensor | None) -> dict[str, Tensor]:
    """Parameters of a layer whose output channels are FiLM-modulated, ``y ⊙ (1 + γ) + β``:
    ``{"weight": (1 + γ) ⊙ W, "bias": (1 + γ) ⊙ b + β}`` (no ``bias`` entry when the layer has none,
    and then ``beta`` must be ``None``).

    >>> p = film_parameters(torch.ones(2, 3), torch.ones(2), torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.0]))
    >>> p["weight"].tolist(), p["bias"].tolist()
    ([[2.0, 2.0, 2.0], [1.0, 1.0, 1.0]], [2.5, 1.0])
    """
    scale = 1.0 + gamma
    out = {"weight": weight * scale.view(-1, *([1] * (weight.ndim - 1)))}
    if bias is not None:
        out["bias"] = bias * scale + (beta if beta is not None else 0.0)
    elif beta is not None:
        raise ValueError("a FiLM shift needs a layer with a bias")
    return out


def low_rank_parameters(weight: Tensor, bias: Tensor | None, u: Tensor, v: Tensor, c: Tensor,
                        b: Tensor | None) -> dict[str, Tensor]:
    """``{"weight": W + U diag(c) Vᵀ, "bias": bias + B c}`` (``W`` as ``[out, in·k·k]``, shapes
    ``U [out, r]``, ``V [in·k·k, r]``, ``c [r]``, ``B [out, r]``).

    >>> p = low_rank_parameters(torch.zeros(2, 2), torch.zeros(2), torch.eye(2), torch.eye(2),
    ...                         torch.tensor([1.0, 2.0]), torch.ones(2, 2))
    >>> p["weight"].tolist(), p["bias"].tolist()
    ([[1.0, 0.0], [0.0, 2.0]], [3.0, 3.0])
    """
    delta = (u * c) @ v.T
    out = {"weight": weight + delta.view_as(weight)}
    if bias is not None:
        out["bias"] = bias + (b @ c if b is not None else 0.0)
    return out


# --- hypernetworks --------------------------------------------------------------------------------
class PreferenceMLP(nn.Sequential):
    """``λ [T] → Linear → ReLU → Linear → [out]``; ``zero_output``: the last layer starts at zero."""

    def __init__(self, n_tasks: int, hidden: int, out: int, zero_output: bool = False) -> None:
        super().__init__(nn.Linear(n_tasks, hidden), nn.ReLU(), nn.Linear(hidden, out))
        if zero_output:
            nn.init.zeros_(self[2].weight)
            nn.init.zeros_(self[2].bias)


def _key(path: str) -> str:
    return path.replace(".", "__")


class FiLM(nn.Module):
    """One MLP ``λ → (γ_l, β_l)`` for all ``layers`` (``{path in the base model: layer}``); zero-initialized
    output, so the identity at start."""

    def __init__(self, layers: Mapping[str, nn.Module], n_tasks: int, hidden: int = 32, gain: float = 1.0) -> None:
        super().__init__()
        self.gain = float(gain)
        self.paths = list(layers)
        self.channels = [int(layers[p].weight.shape[0]) for p in self.paths]
        self.has_bias = [layers[p].bias is not None for p in self.paths]
        total = sum(c * (2 if b else 1) for c, b in zip(self.channels, self.has_bias, strict=True))
        self.net = PreferenceMLP(n_tasks, hidden, total, zero_output=True)

    def forward(self, pref: Tensor, base: nn.Module) -> dict[str, Tensor]:
        out = self.gain * self.net(pref)
        params: dict[str, Tensor] = {}
        offset = 0
        for path, ch, has_bias in zip(self.paths, self.channels, self.has_bias, strict=True):
            gamma = out[offset: offset + ch]
            offset += ch
            beta = None
            if has_bias:
                beta = out[offset: offset + ch]
                offset += ch
            layer = base.get_submodule(path)
            for name, value in film_parameters(layer.weight, layer.bias, gamma, beta).items():
                params[f"{path}.{name}"] = value
        return params


class _LayerLowRank(nn.Module):
    def __init__(self, layer: nn.Module, n_tasks: int, hidden: int, rank: int) -> None:
        super().__init__()
        out = int(layer.weight.shape[0])
        fan_in = layer.weight[0].numel()
        self.coef = PreferenceMLP(n_tasks, hidden, rank)
        self.u = nn.Parameter(torch.zeros(out, rank))
        self.v = nn.Parameter(torch.randn(fan_in, rank) / math.sqrt(fan_in))
        self.b = nn.Parameter(torch.zeros(out, rank)) if layer.bias is not None else None


class LowRank(nn.Module):
    """A rank-``rank`` update ``U diag(MLP(λ)) Vᵀ`` (and ``B MLP(λ)`` for the bias) of each of ``layers``,
    one hypernetwork per layer; ``U``, ``B`` start at zero (the identity)."""

    def __init__(self, layers: Mapping[str, nn.Module], n_tasks: int, hidden: int = 32, rank: int = 4,
                 gain: float = 1.0) -> None:
        super().__init__()
        self.gain = float(gain)
        self.paths = list(layers)
        self.layers = nn.ModuleDict({_key(p): _LayerLowRank(layers[p], n_tasks, hidden, rank) for p in self.paths})

    def forward(self, pref: Tensor, base: nn.Module) -> dict[str, Tensor]:
        params: dict[str, Tensor] = {}
        for path in self.paths:
            g = self.layers[_key(path)]
            layer = base.get_submodule(path)
            c = self.gain * g.coef(pref)
            for name, value in low_rank_parameters(layer.weight, layer.bias, g.u, g.v, c, g.b).items():
                params[f"{path}.{name}"] = value
        return params


Conditioning = Callable[..., nn.Module]  # (layers, n_tasks, hidden, rank, gain) -> module(pref, base) -> params


def _film(layers: Mapping[str, nn.Module], n_tasks: int, hidden: int, rank: int, gain: float) -> nn.Module:
    return FiLM(layers, n_tasks, hidden, gain)


def _low_rank(layers: Mapping[str, nn.Module], n_tasks: int, hidden: int, rank: int, gain: float) -> nn.Module:
    return LowRank(layers, n_tasks, hidden, rank, gain)


#: Encoder conditionings by name (``none``: the encoder is not conditioned).
ENCODER_CONDITIONINGS: dict[str, Conditioning | None] = {"film": _film, "lora": _low_rank, "none": None}
#: Head conditionings by name.
HEAD_CONDITIONINGS: dict[str, Conditioning | None] = {"lowrank": _low_rank, "none": None}


def conditionable_layers(base: MultiTaskModel) -> tuple[dict[str, nn.Module], dict[str, nn.Module]]:
    """``(encoder layers, head layers)`` of ``base``, each ``{path: layer}``: ``Linear``/``Conv*d`` layers
    whose trainable parameters are all shared (encoder) or all task-specific (heads)."""
    shared = {id(p) for p in base.shared_parameters()}
    enc: dict[str, nn.Module] = {}
    heads: dict[str, nn.Module] = {}
    for path, module in base.named_modules():
        if not isinstance(module, CONDITIONABLE) or not module.weight.requires_grad:
            continue
        ids = [id(p) for p in (module.weight, module.bias) if p is not None]
        if all(i in shared for i in ids):
            enc[path] = module
        elif not any(i in shared for i in ids):
            heads[path] = module
    return enc, heads


def check_preference(pref: Sequence[float] | Tensor, n_tasks: int) -> Tensor:
    """A preference as a float64 vector on the simplex (``ValueError`` unless it has ``n_tasks`` finite,
    non-negative entries with a positive sum; it is normalized to sum 1)."""
    p = torch.as_tensor(pref, dtype=torch.float64).reshape(-1)
    if p.numel() != n_tasks:
        raise ValueError(f"a preference needs {n_tasks} entries (one per task), got {p.numel()}")
    if not bool(torch.isfinite(p).all()) or bool((p < 0).any()) or not float(p.sum()) > 0:
        raise ValueError(f"a preference must be finite, non-negative and not all zero, got {p.tolist()}")
    return p / p.sum()


class _Dispatch(nn.Module):
    """``forward(which, *args) = base.<which>(*args)``, so ``functional_call`` can run ``encode``/``decode``."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, which: str, *args: Tensor) -> object:
        return getattr(self.base, which)(*args)


class PreferenceConditionedModel(MultiTaskModel):
    """``base`` with its encoder and heads conditioned on the preference held in the buffer
    ``preference`` (set it with :meth:`set_preference`; training draws it per batch).

    Args:
        base: any multi-task model (``encode``/``decode``); it keeps its own parameters.
        encoder: ``film``, ``lora`` or ``none`` (:data:`ENCODER_CONDITIONINGS`).
        heads: ``lowrank`` or ``none`` (:data:`HEAD_CONDITIONINGS`).
        hidden: width of the hypernetworks' hidden layer; rank: rank of the low-rank updates.
        gain: factor on every hypernetwork output (γ, β and the low-rank coefficients ``c``); it scales
            how fast the preference dependence is learned relative to the base parameters (the
            gradient step of ``U`` and of FiLM's output layer grows with it).

    >>> from moomtl.models.lenet import hps_lenet
    >>> m = PreferenceConditionedModel(hps_lenet(), encoder="film", heads="lowrank")
    >>> m.set_preference([0.2, 0.8]); m(torch.zeros(2, 1, 28, 28))["left"].shape
    torch.Size([2, 10])
    """

    def __init__(self, base: MultiTaskModel, encoder: str = "film", heads: str = "lowrank", hidden: int = 32,
                 rank: int = 4, gain: float = 1.0) -> None:
        super().__init__()
        if encoder not in ENCODER_CONDITIONINGS:
            raise ValueError(f"unknown encoder conditioning {encoder!r}; choose {', '.join(ENCODER_CONDITIONINGS)}")
        if heads not in HEAD_CONDITIONINGS:
            raise ValueError(f"unknown head conditioning {heads!r}; choose {', '.join(HEAD_CONDITIONINGS)}")
        if hidden < 1 or rank < 1:
            raise ValueError(f"hidden and rank must be ≥ 1, got hidden={hidden}, rank={rank}")
        if not gain > 0:
            raise ValueError(f"gain must be > 0, got {gain}")
        self.base = base
        self.task_names = tuple(base.task_names)
        n = len(self.task_names)
        self.register_buffer("preference", torch.full((n,), 1.0 / n))
        enc_layers, head_layers = conditionable_layers(base)
        make_enc, make_heads = ENCODER_CONDITIONINGS[encoder], HEAD_CONDITIONINGS[heads]
        if make_enc is not None and not enc_layers:
            raise ValueError(f"encoder conditioning {encoder!r}: the encoder has no Linear/Conv layer to condition")
        if make_heads is not None and not head_layers:
            raise ValueError(f"head conditioning {heads!r}: the heads have no Linear/Conv layer to condition")
        self.encoder_conditioning = make_enc(enc_layers, n, hidden, rank, gain) if make_enc is not None else None
        self.head_conditioning = make_heads(head_layers, n, hidden, rank, gain) if make_heads is not None else None

    def set_preference(self, pref: Sequence[float] | Tensor) -> None:
        """Condition on ``pref`` (checked, normalized to the simplex) from now on."""
        p = check_preference(pref, len(self.task_names))
        with torch.no_grad():
            self.preference.copy_(p)

    def _run(self, which: str, conditioning: nn.Module | None, *args: Tensor) -> object:
        if conditioning is None:
            return getattr(self.base, which)(*args)
        params = conditioning(self.preference, self.base)
        return functional_call(_Dispatch(self.base), {f"base.{k}": v for k, v in params.items()}, (which, *args),
                               strict=False)

    def encode(self, x: Tensor) -> Tensor:
        return self._run("encode", self.encoder_conditioning, x)  # type: ignore[return-value]

    def decode(self, z: Tensor, x: Tensor) -> dict[str, Tensor]:
        return self._run("decode", self.head_conditioning, z, x)  # type: ignore[return-value]

    def shared_modules(self) -> nn.Module:
        mods = [self.base.shared_modules()]
        if self.encoder_conditioning is not None:
            mods.append(self.encoder_conditioning)
        return nn.ModuleList(mods)

    @torch.no_grad()
    def specialised_state_dict(self, pref: Sequence[float] | Tensor) -> dict[str, Tensor]:
        """The state dict of a plain ``base`` model that computes what this model computes at ``pref``
        (the effective parameters, detached; every other entry as in ``base``). The current preference
        is left unchanged."""
        saved = self.preference.clone()
        try:
            self.set_preference(pref)
            state = {k: v.detach().clone() for k, v in self.base.state_dict().items()}
            for cond in (self.encoder_conditioning, self.head_conditioning):
                if cond is not None:
                    state.update({k: v.detach().clone() for k, v in cond(self.preference, self.base).items()})
        finally:
            self.preference.copy_(saved)
        return state


__all__ = [
    "CONDITIONABLE",
    "ENCODER_CONDITIONINGS",
    "FiLM",
    "HEAD_CONDITIONINGS",
    "LowRank",
    "PreferenceConditionedModel",
    "PreferenceMLP",
    "check_preference",
    "conditionable_layers",
    "film_parameters",
    "low_rank_parameters",
]
