"""`moomtl reproduce`: registry, --list, the framework's folder rules, and the linear-MTL entry's math
against independent brute force."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from moomtl.cli import app
from moomtl.experiments.reproduce import _linear_mtl as lm
from moomtl.experiments.reproduce import available_entries, list_lines
from moomtl.pareto import non_dominated

ENTRY = "zhao2024-linear-mtl"


def _instance(k: int, seed: int, want_condition: bool | None = None, q: int = 1) -> lm.Instance:
    rng = np.random.default_rng(seed)
    while True:
        inst = lm.make_instance(rng, k, n=30, p=6)
        mat = inst.G if q == 1 else np.linalg.inv(inst.G)
        if want_condition is None or lm.dnn_up_to_signs(mat) == want_condition:
            return inst


def _sphere(r: int, m: int) -> np.ndarray:
    if r == 2:
        th = np.linspace(0, np.pi, m, endpoint=False)
        return np.stack([np.cos(th), np.sin(th)], axis=1)
    th, ph = np.meshgrid(np.linspace(0, np.pi, m), np.linspace(0, 2 * np.pi, 2 * m), indexing="ij")
    return np.stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)], axis=-1).reshape(-1, 3)


def test_registry_lists_the_entry() -> None:
    entries = available_entries()
    assert ENTRY in entries
    e = entries[ENTRY]
    assert e.data == "none (synthetic)" and not e.needs_root and e.quick_time and e.full_time


def test_list_one_line_per_entry() -> None:
    res = CliRunner().invoke(app, ["reproduce", "--list"])
    assert res.exit_code == 0
    lines = res.output.strip().splitlines()
    assert len(lines) == len(available_entries()) == len(list_lines())
    rows = [[f.strip() for f in line.split("|")] for line in lines]
    assert [r[0] for r in rows] == sorted(available_entries())  # one line per entry, by id
    assert all(len(r) == 6 and r[3].startswith("data: ") and r[4].startswith("--quick:") and r[5].startswith("full:")
               for r in rows)
    fields = next(r for r in rows if r[0] == ENTRY)
    assert "seed 004" in fields[1] and fields[3] == "data: none (synthetic)"


def test_a_wide_network_reaches_every_task_optimum() -> None:
    inst = _instance(3, 0)
    own = np.array([np.linalg.lstsq(inst.X, inst.Y[:, i], rcond=None)[1][0] for i in range(3)])  # brute: OLS
    for q in (3, 4):
        for lam in lm.simplex_grid(3, 5, interior=False):
            losses = lm.network_losses(inst, lm.ls_projection(inst.B, lam, q))
            np.testing.assert_allclose(losses, own, rtol=1e-9)
    assert lm.ls_solutions(inst.B, lm.simplex_grid(3, 5, interior=False), 2).max() > 1e-3 * own.mean()


def test_q1_k2_front_against_direct_parametrization() -> None:
    inst = _instance(2, 1)
    B = inst.B
    u = (_sphere(2, 20000) @ B) ** 2  # every unit v of R², front = its non-dominated excess losses
    brute = np.diag(inst.G) - u
    brute = brute[non_dominated(brute)]
    e, s = lm.chebyshev_q1(B, lm.simplex_grid(2, 200))
    reach = lm.ls_reachability(B, e, s, 1)
    front = e[reach.pareto]
    dist = np.sqrt(((front[:, None, :] - brute[None, :, :]) ** 2).sum(-1)).min(axis=1)
    assert dist.max() < 1e-3 * np.diag(inst.G).mean()
    assert reach.reachable[reach.pareto].all()  # k = 2: G is always DNN up to a sign flip
    # brute-force LS: rank-1 Eckart–Young of Ŷ Λ^{1/2} by SVD on a weight grid, lands on the front
    for t in np.linspace(0.01, 0.99, 25):
        lam = np.array([t, 1 - t])
        U, S, Vt = np.linalg.svd(inst.Yhat * np.sqrt(lam), full_matrices=False)
        v = U[:, 0]
        e_ls = ((inst.Yhat - np.outer(v, v @ inst.Yhat)) ** 2).sum(axis=0)
        np.testing.assert_allclose(lm.chebyshev_ray(B, e_ls[None], 1), [1.0], atol=1e-9)


@pytest.mark.parametrize("condition", [True, False])
def test_q1_k3_theorem_with_brute_force(condition: bool) -> None:
    inst = _instance(3, 2, want_condition=condition, q=1)
    B, g = inst.B, np.diag(inst.G)
    d = lm.simplex_grid(3, 12)
    e, s = lm.chebyshev_q1(B, d)
    # the Chebyshev value against a sphere scan of v: max_v min_i ... (brute force, from above)
    e_sphere = g - (_sphere(3, 300) @ B) ** 2
    brute_tau = (e_sphere[None, :, :] / d[:, None, :]).max(axis=2).min(axis=1)
    tau = (e / d).max(axis=1)
    assert (tau <= brute_tau + 1e-9).all() and (brute_tau - tau).max() < 2e-2 * (g / d).max()
    reach = lm.ls_reachability(B, e, s, 1)
    missed = reach.pareto & non_dominated(e) & ~reach.reachable
    assert missed.any() != condition
    lam = lm.simplex_grid(3, 60, interior=False)
    gaps = (e @ lam.T - lm.ls_value(B, lam, 1)[None]) / (lam @ g)[None]
    if condition:
        assert gaps[reach.pareto].min(axis=1).max() < 5e-3  # every front point nearly LS-optimal on the grid
    else:
        pool = np.vstack([lm.ls_solutions(B, lam, 1), e])
        worst = np.flatnonzero(missed)[np.argmax(reach.gap[missed])]
        assert lm.dominating_margin(e[worst], pool) > 0  # (d): strictly dominated by feasible points


@pytest.mark.parametrize("condition", [True, False])
def test_q_km1_theorem_with_brute_force(condition: bool) -> None:
    inst = _instance(3, 3, want_condition=condition, q=2)
    B = inst.B
    d = lm.simplex_grid(3, 12)
    e, t = lm.chebyshev_qkm1(B, d)
    e_sphere = (_sphere(3, 300) @ B) ** 2  # Π = I − wwᵀ for every unit w: e = (Bᵀw)²
    brute_tau = (e_sphere[None, :, :] / d[:, None, :]).max(axis=2).min(axis=1)
    tau = (e / d).max(axis=1)
    assert (tau <= brute_tau + 1e-9).all() and (brute_tau - tau).max() < 2e-2 * tau.max()
    P = np.eye(3) - np.linalg.solve(B.T, t[0])[:, None] * np.linalg.solve(B.T, t[0])[None, :]
    np.testing.assert_allclose(lm.network_losses(inst, P) - inst.c, e[0], rtol=1e-8)
    reach = lm.ls_reachability(B, e, t, 2)
    missed = reach.pareto & ~reach.reachable
    fine = lm.ls_reachability(B, *lm.chebyshev_qkm1(B, lm.simplex_grid(3, 60)), 2)
    assert (fine.pareto & ~fine.reachable).any() != condition
    if not condition and missed.any():
        pool = np.vstack([lm.ls_solutions(B, lm.simplex_grid(3, 60, interior=False), 2), e])
        worst = np.flatnonzero(missed)[np.argmax(reach.gap[missed])]
        assert lm.dominating_margin(e[worst], pool) > 0


def test_cli_writes_strict_results_and_folder_rules(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "r"
    res = runner.invoke(app, ["reproduce", ENTRY, "--quick", "--seeds", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    md = (out / "results.md").read_text()
    assert "| item | paper | ours | agrees |" in md and "(d)" in md
    data = json.loads((out / "results.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert data["reproduce"] == ENTRY and {"paper", "ours"} <= set(data["rows"][0])
    # same entry again: recomputed in place
    assert runner.invoke(app, ["reproduce", ENTRY, "--quick", "--seeds", "1", "--out", str(out)]).exit_code == 0
    assert json.loads((out / "results.json").read_text())["seeds"] == 1
    # a folder holding another command's results: refused (one line, exit 2) unless --overwrite
    other = tmp_path / "sweep"
    other.mkdir()
    (other / "results.json").write_text('{"method": "linear", "rows": []}')
    res = runner.invoke(app, ["reproduce", ENTRY, "--quick", "--seeds", "1", "--out", str(other)])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1 and "--overwrite" in res.output
    ok = runner.invoke(app, ["reproduce", ENTRY, "--quick", "--seeds", "1", "--out", str(other), "--overwrite"])
    assert ok.exit_code == 0


def test_unknown_id_one_line_exit_2() -> None:
    res = CliRunner().invoke(app, ["reproduce", "no-such-entry"])
    assert res.exit_code == 2
    assert len(res.output.strip().splitlines()) == 1 and ENTRY in res.output
