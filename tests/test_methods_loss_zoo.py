"""Loss-balancing methods FAMO, DWA, GLS and DB-MTL, each checked against an independent recomputation of
the official / LibMTL formula, for bit-identical resume and, for FAMO and DWA, a 1-epoch run on real data."""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from moomtl.methods import build_method
from moomtl.methods.base import Method
from moomtl.methods.db_mtl import db_mtl_direction
from moomtl.methods.famo import famo_weights
from moomtl.methods.gls import gls_weights
from moomtl.models.base import MultiTaskModel
from moomtl.models.lenet import hps_lenet
from moomtl.train.context import StepContext
from moomtl.train.trainer import Trainer

D = torch.float64


class Quad(MultiTaskModel):
    """Shared θ ∈ R^d, a linear head per task: ``L_t = s_t ||θ − a_t||² + (h_t − 1)²·c_t``, so losses are
    positive, their gradients known in closed form and the heads are task-specific parameters."""

    def __init__(self, targets: Tensor, scales: Tensor | None = None, head: bool = True) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(targets.shape[1], dtype=D))
        self.register_buffer("a", targets.to(D))
        self.register_buffer("s", torch.ones(targets.shape[0], dtype=D) if scales is None else scales.to(D))
        self.task_names = tuple(f"t{i}" for i in range(targets.shape[0]))
        self.heads = nn.ParameterList(
            [nn.Parameter(torch.full((), 0.5, dtype=D)) for _ in self.task_names] if head else []
        )

    def encode(self, x: Tensor) -> Tensor:
        return self.theta.unsqueeze(0).expand(x.shape[0], -1)

    def decode(self, z: Tensor, x: Tensor) -> dict[str, Tensor]:
        out = {}
        for i, t in enumerate(self.task_names):
            loss = self.s[i] * (z[0] - self.a[i]).pow(2).sum() + 0.1
            if len(self.heads):
                loss = loss + 0.3 * (self.heads[i] - 1.0).pow(2)
            out[t] = loss
        return out

    def shared_modules(self) -> nn.Module:
        return nn.ModuleList([])  # replaced below: θ is the shared parameter

    def shared_parameters(self) -> list[nn.Parameter]:
        return [self.theta]

    def task_specific_parameters(self) -> list[nn.Parameter]:
        return list(self.heads)


def quad_model(seed: int = 0, n_tasks: int = 3, dim: int = 4, head: bool = True) -> Quad:
    g = torch.Generator().manual_seed(seed)
    return Quad(torch.randn(n_tasks, dim, generator=g, dtype=D),
                torch.rand(n_tasks, generator=g, dtype=D) + 0.5, head=head)


def step(method: Method, model: MultiTaskModel, lr: float = 0.05, epoch: int = 0) -> dict[str, Tensor]:
    """One manual training step (zero grads, backward, SGD update)."""
    for p in model.parameters():
        p.grad = None
    x = torch.zeros(1, 1)
    z = model.encode(x)
    losses = model.decode(z, x)
    info = method.backward(losses, StepContext(model, losses, z, epoch=epoch))
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= lr * p.grad
    return info


def losses_of(model: MultiTaskModel) -> Tensor:
    x = torch.zeros(1, 1)
    with torch.no_grad():
        out = model.decode(model.encode(x), x)
    return torch.stack([out[t] for t in model.task_names])


def assert_detached_tensors(info: dict) -> None:
    for k, v in info.items():
        assert isinstance(v, Tensor) and v.ndim == 0 and not v.requires_grad, k


def assert_resume_is_bit_identical(name: str, hp: dict, n_before: int = 5, n_after: int = 3,
                                   between: Callable[[Method], None] | None = None) -> None:
    """Train ``n_before`` steps, checkpoint the method and the model (through bytes), continue both the
    original and a fresh method restored from the checkpoint: same gradients, weights and state."""
    torch.manual_seed(0)
    model = quad_model()
    method = build_method(name, **hp)
    method.setup(model.task_names, model)
    for k in range(n_before):
        step(method, model, epoch=k // 2)
        if between is not None and k % 2 == 1:
            between(method)
    buf = io.BytesIO()
    torch.save({"method": method.state_dict(), "model": model.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    model2 = quad_model()
    model2.load_state_dict(ckpt["model"])
    method2 = build_method(name, **hp)
    method2.setup(model2.task_names, model2)
    method2.load_state_dict(ckpt["method"])
    for k in range(n_after):
        a = step(method, model, epoch=(n_before + k) // 2)
        b = step(method2, model2, epoch=(n_before + k) // 2)
        assert a.keys() == b.keys()
        for key in a:
            assert (torch.equal(a[key], b[key]) if isinstance(a[key], Tensor) else a[key] == b[key]), key
        for p, q in zip(model.parameters(), model2.parameters(), strict=True):
            assert torch.equal(p, q)
    for (k1, v1), (k2, v2) in zip(method.state_dict().items(), method2.state_dict().items(), strict=True):
        assert k1 == k2 and torch.equal(v1, v2), k1


def small_splits(data, n_train: int = 256):
    return type(data)(data.train.subset(n_train), data.val.subset(64), data.test.subset(64), data.description)


def assert_trainer_resume_identical(name: str, data, tmp_path, epochs: int = 2, **hp) -> list[dict]:
    """Through the real Trainer and its checkpoint file: ``epochs`` in one go == ``epochs − 1`` + resume.
    Returns the uninterrupted run's history."""
    def train(n: int, out, resume: bool = False):
        torch.manual_seed(0)
        model = hps_lenet()
        res = Trainer(model, build_method(name, **hp), epochs=n, batch_size=64, out_dir=out,
                      optimizer_kwargs={"lr": 0.05}).fit(data, resume=resume)
        return model, res

    whole, res = train(epochs, tmp_path / "whole")
    train(epochs - 1, tmp_path / "split")
    resumed, _ = train(epochs, tmp_path / "split", resume=True)
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    return res.history


# === FAMO ==============================================================================================
class OfficialFAMO:
    """Independent re-statement of the official FAMO class (Cranial-XIX/FAMO, famo.py): a leaf logit
    tensor stepped by ``torch.optim.Adam(lr=w_lr, weight_decay=gamma)``, ``min_losses = 0``."""

    def __init__(self, n: int, gamma: float, w_lr: float) -> None:
        self.w = torch.zeros(n, requires_grad=True)
        self.opt = torch.optim.Adam([self.w], lr=w_lr, weight_decay=gamma)
        self.prev: Tensor | None = None

    def weights(self, losses: Tensor) -> Tensor:
        """Gradient of the official weighted loss Σ (z/c) log(L + 1e-8) w.r.t. L, by autograd."""
        self.prev = losses
        f = losses.clone().requires_grad_(True)
        z = torch.softmax(self.w.detach(), -1)
        d = f + 1e-8
        c = (z / d).sum().detach()
        (g,) = torch.autograd.grad((d.log() * z / c).sum(), f)
        return g

    def update(self, curr: Tensor) -> None:
        delta = (self.prev + 1e-8).log() - (curr + 1e-8).log()
        with torch.enable_grad():
            (d,) = torch.autograd.grad(torch.softmax(self.w, -1), self.w, grad_outputs=delta)
        self.opt.zero_grad()
        self.w.grad = d
        self.opt.step()


def test_famo_matches_the_official_update_sequence():
    """Reference: official FAMO (famo.py) fed the same loss sequence, with its ``update(curr)`` called
    with the next step's losses (our documented choice). Weights and logits agree over 30 steps."""
    g = torch.Generator().manual_seed(1)
    seq = torch.rand(30, 3, generator=g) * 2 + 0.05
    ours = build_method("famo", w_lr=0.1, gamma=0.01)
    ours.setup(["a", "b", "c"], nn.Linear(1, 1))
    ref = OfficialFAMO(3, gamma=0.01, w_lr=0.1)
    worst = 0.0
    for k, losses in enumerate(seq):
        if k > 0:
            ref.update(losses)
        w_ref = ref.weights(losses)
        ours.update_logits(losses)
        w = famo_weights(ours.logits, losses)
        worst = max(worst, float((w - w_ref).abs().max()), float((ours.logits - ref.w.detach()).abs().max()))
    assert worst < 1e-5
    assert float(ours.logits.abs().max()) > 1e-2  # the logits did move
    assert int(ours.adam_steps) == 29


def test_famo_first_step_is_the_inverse_loss_weighting_and_weights_sum_to_one():
    """Reference: with ξ = 0 FAMO's gradient of Σ z_t/c log L_t is (1/L_t)/Σ_s(1/L_s) (official formula)."""
    model = quad_model()
    m = build_method("famo")
    m.setup(model.task_names, model)
    lv = losses_of(model)
    info = step(m, model)
    assert_detached_tensors(info)
    w = torch.stack([info[f"weight/{t}"] for t in model.task_names])
    expected = (1 / (lv + 1e-8)) / (1 / (lv + 1e-8)).sum()
    torch.testing.assert_close(w, expected, rtol=1e-6, atol=1e-7)
    assert w.dtype == D  # the loss dtype is kept
    assert float(w.sum()) == pytest.approx(1.0)


def test_famo_gradient_is_the_weighted_loss_gradient():
    """Reference: autograd of the official objective Σ (z/c) log(L + ε) on a fresh copy of the model."""
    model, twin = quad_model(), quad_model()
    m = build_method("famo")
    m.setup(model.task_names, model)
    step(m, model)
    twin.load_state_dict(model.state_dict())
    z_logits = m.logits.clone()
    for p in model.parameters():
        p.grad = None
    x = torch.zeros(1, 1)
    zz = model.encode(x)
    losses = model.decode(zz, x)
    m.backward(losses, StepContext(model, losses, zz))
    # the logits were updated inside backward; recompute the official loss with the updated ones
    lt = torch.stack(list(twin(x).values()))
    z = torch.softmax(m.logits.to(D), -1)
    c = (z / (lt.detach() + 1e-8)).sum()
    (torch.log(lt + 1e-8) * z / c).sum().backward()
    assert not torch.equal(z_logits, m.logits)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-9)


def test_famo_bad_hyperparameters():
    for hp in ({"w_lr": 0.0}, {"w_lr": float("nan")}, {"gamma": -1.0}):
        with pytest.raises(ValueError, match="famo"):
            build_method("famo", **hp)


def test_famo_resume_is_bit_identical():
    assert_resume_is_bit_identical("famo", {})


def test_famo_one_epoch_on_real_data(tiny_multimnist, tmp_path):
    """Smoke test: 1 epoch of FAMO on a few hundred real MultiMNIST images, the weights are logged and
    finite and the logits moved away from 0."""
    data = small_splits(tiny_multimnist, 320)
    torch.manual_seed(0)
    method = build_method("famo")
    res = Trainer(hps_lenet(), method, epochs=1, batch_size=32, optimizer_kwargs={"lr": 0.05}).fit(data)
    row = res.history[0]
    assert row["train/weight/left"] + row["train/weight/right"] == pytest.approx(1.0, abs=1e-6)
    assert all(math.isfinite(v) for k, v in row.items() if isinstance(v, float))
    assert float(method.logits.abs().max()) > 0
    assert int(method.adam_steps) == 320 // 32 - 1


# === DWA ===============================================================================================
def test_dwa_matches_libmtl_on_recorded_epoch_losses():
    """Reference: LibMTL DWA.backward: weights 1 for epochs 0 and 1, then
    ``T softmax((buf[:, e−1] / buf[:, e−2]) / T)`` with ``buf`` the per-epoch mean training losses,
    recomputed here from the losses the steps saw."""
    model = quad_model(seed=3)
    m = build_method("dwa", temperature=2.0)
    m.setup(model.task_names, model)
    history: list[Tensor] = []
    worst = 0.0
    for epoch in range(5):
        seen = []
        for _ in range(4):
            seen.append(losses_of(model))
            info = step(m, model, lr=0.02, epoch=epoch)
            assert_detached_tensors(info)
            w = torch.stack([info[f"weight/{t}"] for t in model.task_names])
            if epoch < 2:
                assert torch.equal(w, torch.ones_like(w))
            else:
                r = history[epoch - 1] / history[epoch - 2]
                ref = 3 * torch.softmax(r / 2.0, dim=-1)
                worst = max(worst, float((w - ref).abs().max()))
        history.append(torch.stack(seen).mean(0))
        m.end_epoch()
    assert worst < 1e-6
    assert int(m.epochs_done) == 5


def test_dwa_invariances_and_limits():
    """Equal loss ratios give equal weights 1 (any temperature); a huge temperature gives weights → 1;
    weights always sum to T (the paper's normalization)."""
    from moomtl.methods.dwa import dwa_weights

    last, prev = torch.tensor([0.5, 1.0, 2.0]), torch.tensor([1.0, 2.0, 4.0])
    torch.testing.assert_close(dwa_weights(last, prev, 0.1), torch.ones(3))
    skew = torch.tensor([0.2, 1.0, 3.0])
    torch.testing.assert_close(dwa_weights(skew, prev, 1e6), torch.ones(3), atol=1e-5, rtol=0)
    assert float(dwa_weights(skew, prev, 0.7).sum()) == pytest.approx(3.0)
    w = dwa_weights(skew, prev, 2.0)
    assert w[2] > w[1] > w[0]  # the task whose loss fell the least gets the most weight


def test_dwa_bad_hyperparameters():
    for t in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            build_method("dwa", temperature=t)


def test_dwa_resume_is_bit_identical():
    assert_resume_is_bit_identical("dwa", {}, n_before=7, n_after=4, between=lambda m: m.end_epoch())


def test_dwa_one_epoch_on_real_data_and_resume_across_epochs(tiny_multimnist, tmp_path):
    """Smoke test on real MultiMNIST: one epoch (weights 1), then a 3-epoch run equals 2 epochs + resume
    through the trainer's checkpoint, and the third epoch's weights are no longer 1."""
    data = small_splits(tiny_multimnist, 192)
    torch.manual_seed(0)
    res = Trainer(hps_lenet(), build_method("dwa"), epochs=1, batch_size=32).fit(data)
    assert res.history[0]["train/weight/left"] == 1.0 and res.history[0]["train/weight/right"] == 1.0
    hist = assert_trainer_resume_identical("dwa", data, tmp_path, epochs=3)
    w = (hist[2]["train/weight/left"], hist[2]["train/weight/right"])
    assert w != (1.0, 1.0) and sum(w) == pytest.approx(2.0, abs=1e-6)


# === GLS ===============================================================================================
def test_gls_gradient_matches_libmtl_objective():
    """Reference: LibMTL GLS backpropagates ``losses.prod() ** (1/T)``; our weighted single backward gives
    the same parameter gradients."""
    model, twin = quad_model(seed=5), quad_model(seed=5)
    m = build_method("gls")
    m.setup(model.task_names, model)
    x = torch.zeros(1, 1)
    z = model.encode(x)
    losses = model.decode(z, x)
    info = m.backward(losses, StepContext(model, losses, z))
    assert_detached_tensors(info)
    lt = torch.stack(list(twin(x).values()))
    torch.pow(lt.prod(), 1.0 / 3).backward()
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-12, atol=1e-14)


def test_gls_weights_scale_invariance_and_edge_cases():
    """Rescaling one loss by c scales the whole gradient by c^(1/T) and leaves its direction unchanged;
    many small losses do not underflow (log-space geometric mean); a zero loss gives zero weights."""
    f = torch.tensor([0.3, 2.0, 5.0], dtype=D)
    c = torch.tensor([7.0, 1.0, 1.0], dtype=D)
    # weights on the *unscaled* gradients: w'_t c_t for the scaled losses c_t L_t
    w, w_scaled = gls_weights(f), gls_weights(c * f) * c
    torch.testing.assert_close(w_scaled, w * 7.0 ** (1 / 3))
    small = torch.full((400,), 1e-3, dtype=torch.float32)
    ws = gls_weights(small)
    assert torch.isfinite(ws).all() and float(ws[0]) == pytest.approx(1 / 400, rel=1e-4)
    assert torch.equal(gls_weights(torch.tensor([0.0, 1.0])), torch.zeros(2))


# === DB-MTL ============================================================================================
def libmtl_db_mtl_steps(model: Quad, n_steps: int, beta: float, sigma: float, lr: float) -> list[list[Tensor]]:
    """Independent re-statement of LibMTL DB_MTL.backward: per task ``log(L_t + 1e-8).backward()``
    (collecting the shared gradient, heads accumulating theirs), EMA with ``beta / step**sigma``, rescale
    to the largest norm, shared gradient replaced. Returns every step's gradients (θ, heads)."""
    buf = torch.zeros(len(model.task_names), model.theta.numel(), dtype=D)
    out = []
    for k in range(1, n_steps + 1):
        for p in model.parameters():
            p.grad = None
        x = torch.zeros(1, 1)
        losses = model(x)
        rows = []
        for t in model.task_names:
            torch.log(losses[t] + 1e-8).backward(retain_graph=True)
            rows.append(model.theta.grad.clone())
            model.theta.grad = None
        g = torch.stack(rows)
        buf = g + (beta / k**sigma) * (buf - g)
        norms = buf.norm(dim=-1)
        alpha = norms.max() / (norms + 1e-8)
        model.theta.grad = (alpha.unsqueeze(1) * buf).sum(0)
        out.append([p.grad.clone() for p in model.parameters()])
        with torch.no_grad():
            for p in model.parameters():
                p -= lr * p.grad
    return out


def test_db_mtl_matches_libmtl_over_several_steps():
    """Reference: LibMTL DB_MTL (re-stated above), 6 steps with β = 0.9, σ = 0.5, shared and head grads."""
    model, twin = quad_model(seed=2), quad_model(seed=2)
    ref = libmtl_db_mtl_steps(twin, 6, 0.9, 0.5, lr=0.05)
    m = build_method("db_mtl", beta=0.9, beta_sigma=0.5)
    m.setup(model.task_names, model)
    worst = 0.0
    for k in range(6):
        for p in model.parameters():
            p.grad = None
        x = torch.zeros(1, 1)
        z = model.encode(x)
        losses = model.decode(z, x)
        info = m.backward(losses, StepContext(model, losses, z))
        assert_detached_tensors(info)
        for p, r in zip(model.parameters(), ref[k], strict=True):
            worst = max(worst, float((p.grad - r).abs().max()))
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.05 * p.grad
    assert worst < 1e-10
    assert int(m.steps) == 6


def test_db_mtl_is_invariant_to_loss_scale():
    """Log-transform: multiplying task t's loss by c_t (its gradient too) leaves d and α unchanged (up to ε)."""
    g = torch.Generator().manual_seed(0)
    jac, lv = torch.randn(3, 5, generator=g, dtype=D), torch.rand(3, generator=g, dtype=D) + 0.5
    ema = torch.randn(3, 5, generator=g, dtype=D)
    c = torch.tensor([100.0, 0.01, 3.0], dtype=D)
    d1, a1, e1 = db_mtl_direction(jac, lv, ema, torch.tensor(4), 0.9, 0.0)
    d2, a2, e2 = db_mtl_direction(jac * c[:, None], lv * c, ema, torch.tensor(4), 0.9, 0.0)
    torch.testing.assert_close(d1, d2, rtol=1e-6, atol=1e-8)
    norms = e1.norm(dim=1)
    torch.testing.assert_close((a1.unsqueeze(1) * e1).norm(dim=1), norms.max().expand(3), rtol=1e-6, atol=0)


def test_db_mtl_bad_hyperparameters_and_resume():
    for hp in ({"beta": 1.0}, {"beta": -0.1}, {"beta_sigma": -1.0}):
        with pytest.raises(ValueError, match="db_mtl"):
            build_method("db_mtl", **hp)
    assert_resume_is_bit_identical("db_mtl", {"beta_sigma": 0.5})
