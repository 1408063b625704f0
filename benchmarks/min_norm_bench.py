"""Benchmark (not a test): MGDA min-norm solvers side by side, in one process, on random Jacobians.

Solvers, all given the same task gradients:

* ours: :func:`moomtl.solvers.min_norm` on the Gramian (default ``method="active_set"``);
* plain Frank-Wolfe: a faithful re-implementation (below) of Sener & Koltun's Algorithm 2 as in the
  authors' ``find_min_norm_element_FW``: best-pair initialization, the 2-vector closed form as line
  search, stop when ``||Δα||_1 < 1e-5``, with its 250-iteration cap enforced;
* quadprog (Goldfarb-Idnani dual active set), the exact reference every gap is measured against;
* LibMTL 1.1.5's MGDA solver ``MGDA._find_min_norm_element`` (it takes the Jacobian and forms the
  Gramian itself, so its time includes that), loaded from its weighting module file only, because the
  package ``__init__`` imports torchvision;
* TorchJD's ``MGDAWeighting`` with its defaults (``epsilon=1e-3, max_iters=100``) on the Gramian.

Peers must be installed in the environment (``pip install --no-deps LibMTL==1.1.5 torchjd``); a
missing one is reported as such. Gap = (f(α) - f_ref) / f_ref with f(α) = αᵀMα in float64 on the very
Gramian the solvers saw; a negative gap is round-off below the reference.

Run (writes the markdown table)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/min_norm_bench.py --out docs/benchmarks_min_norm.md
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import platform
import signal
import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import quadprog
import torch

from moomtl.solvers import min_norm

COMMAND = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/min_norm_bench.py --out docs/benchmarks_min_norm.md"


# --- peers -------------------------------------------------------------------------------------------


def load_libmtl_mgda() -> Callable[[torch.Tensor], torch.Tensor] | str:
    """LibMTL's MGDA solver without importing the ``LibMTL`` package (whose ``__init__`` needs
    torchvision): stub the two parent packages, then execute only the two weighting module files."""
    spec = importlib.util.find_spec("LibMTL")  # finds the package without executing its __init__
    if spec is None or not spec.submodule_search_locations:
        return "not installed"
    root = Path(next(iter(spec.submodule_search_locations)))
    for name, path in (("LibMTL", root), ("LibMTL.weighting", root / "weighting")):
        stub = types.ModuleType(name)
        stub.__path__ = [str(path)]
        sys.modules.setdefault(name, stub)
    modules = {}
    for name in ("abstract_weighting", "MGDA"):
        full = f"LibMTL.weighting.{name}"
        mspec = importlib.util.spec_from_file_location(full, root / "weighting" / f"{name}.py")
        module = importlib.util.module_from_spec(mspec)
        sys.modules[full] = module
        mspec.loader.exec_module(module)
        modules[name] = module
    solver = modules["MGDA"].MGDA()
    return solver._find_min_norm_element  # grads [T, d] -> weights [T]


def load_torchjd_mgda() -> Callable[[torch.Tensor], torch.Tensor] | str:
    try:
        from torchjd.aggregation import MGDAWeighting
    except ImportError as e:
        return f"not installed ({e})"
    return MGDAWeighting()


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


# --- our own baselines ---------------------------------------------------------------------------------


def _two(v1v1: float, v1v2: float, v2v2: float) -> float:
    """Weight on x1 of min_c ||c x1 + (1-c) x2||² (paper eq. 4), clipped to [0, 1]."""
    if v1v2 >= v1v1:
        return 1.0
    if v1v2 >= v2v2:
        return 0.0
    return (v2v2 - v1v2) / (v1v1 + v2v2 - 2.0 * v1v2)


def paper_frank_wolfe(M: np.ndarray, max_iter: int = 250, stop_crit: float = 1e-5) -> np.ndarray:
    """Sener & Koltun, Algorithm 2, the way the authors' code runs it: best pair first, then Frank-Wolfe
    steps towards argmin_t (Mα)_t with the closed-form line search between α and e_t; stop when the
    step moves α by less than ``stop_crit`` in L1 or after ``max_iter`` steps. Two deliberate
    differences from that code: the cap is enforced (the authors' loop never increments its counter)
    and the line search clips to exactly 0/1 (the authors return 0.001/0.999 in the clipped cases)."""
    T = M.shape[0]
    best, alpha = np.inf, None
    for i in range(T):
        for j in range(i + 1, T):
            c = _two(M[i, i], M[i, j], M[j, j])
            cost = c * c * M[i, i] + 2 * c * (1 - c) * M[i, j] + (1 - c) ** 2 * M[j, j]
            if cost < best:
                best, alpha = cost, np.zeros(T)
                alpha[i], alpha[j] = c, 1.0 - c
    if T < 3:
        return alpha if alpha is not None else np.ones(T)
    for _ in range(max_iter):
        t = int(np.argmin(M @ alpha))
        c = _two(float(alpha @ M @ alpha), float(alpha @ M[:, t]), float(M[t, t]))
        new = c * alpha
        new[t] += 1.0 - c
        if np.abs(new - alpha).sum() < stop_crit:
            break
        alpha = new
    return alpha


def fw_support_polish(M: np.ndarray, fw_iters: int = 50) -> np.ndarray:
    """Design alternative: Frank-Wolfe, then solve the equality-constrained QP on its support
    (KKT system [M_SS 1; 1ᵀ 0]); keep the polish only if it stays feasible."""
    alpha = paper_frank_wolfe(M, fw_iters, 0.0)
    S = np.flatnonzero(alpha > 0)
    k = S.size
    K = np.zeros((k + 1, k + 1))
    K[:k, :k] = M[np.ix_(S, S)]
    K[:k, k] = K[k, :k] = 1.0
    sol = np.linalg.lstsq(K, np.r_[np.zeros(k), 1.0], rcond=None)[0][:k]
    if (sol >= 0).all():
        alpha = np.zeros_like(alpha)
        alpha[S] = sol
    return alpha


def qp_reference(M: np.ndarray) -> np.ndarray:
    T = M.shape[0]
    scale = M.diagonal().max()
    G = M / scale + 1e-12 * np.eye(T)  # quadprog needs a numerically PD matrix
    C = np.hstack([np.ones((T, 1)), np.eye(T)])
    alpha = quadprog.solve_qp(G, np.zeros(T), C, np.r_[1.0, np.zeros(T)], meq=1)[0]
    alpha = np.maximum(alpha, 0.0)
    return alpha / alpha.sum()


# --- harness -----------------------------------------------------------------------------------------


def make_jacobian(kind: str, T: int, d: int, gen: torch.Generator) -> torch.Tensor:
    """float32 [T, d]. independent: i.i.d. N(0, 1). spread: the same with per-task norms spread
    log-uniformly over [e^-3, e^3] (≈ 0.05 to 20). correlated: pairwise correlation 0.8 through a
    shared component, with per-task norms spread log-uniformly over [0.5, 2]."""
    if kind == "independent":
        return torch.randn(T, d, generator=gen)
    if kind == "spread":
        return torch.randn(T, d, generator=gen) * torch.exp(torch.empty(T, 1).uniform_(-3.0, 3.0, generator=gen))
    shared = torch.randn(1, d, generator=gen)
    own = torch.randn(T, d, generator=gen)
    scale = torch.exp(torch.empty(T, 1).uniform_(np.log(0.5), np.log(2.0), generator=gen))
    return (0.8**0.5 * shared + 0.2**0.5 * own) * scale


class Timeout(Exception):
    pass


def _alarm(signum, frame):  # noqa: ARG001
    raise Timeout


def bench(fn: Callable[[], object], min_time: float, max_reps: int, timeout: float) -> tuple[float, object]:
    """Median wall time of ``fn`` over repeats (at least 3 unless one call is slower than
    ``min_time``), and its last result. A call running past ``timeout`` seconds raises Timeout."""
    times, out = [], None
    signal.signal(signal.SIGALRM, _alarm)
    start = time.perf_counter()
    while len(times) < max_reps:
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        elapsed = time.perf_counter() - start
        if elapsed >= min_time and (len(times) >= 3 or elapsed >= 3 * min_time):
            break
    return statistics.median(times), out


def objective(M: np.ndarray, alpha) -> float:
    """αᵀMα in float64 after α/Σα, so that a float32 α (LibMTL) is not charged for its rounding."""
    a = np.asarray(torch.as_tensor(alpha).detach().double().cpu().numpy())
    a = a / a.sum()
    return float(a @ M @ a)


def fmt_ms(s: float | None) -> str:
    if s is None:
        return "n/a"
    ms = s * 1e3
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def fmt_gap(g: float | None) -> str:
    return "n/a" if g is None else ("0" if g == 0 else f"{g:.0e}")


def run(args: argparse.Namespace) -> str:
    torch.manual_seed(args.seed)
    libmtl = load_libmtl_mgda()
    torchjd = load_torchjd_mgda()
    gen = torch.Generator().manual_seed(args.seed)
    rows, ablation = [], []
    summary = {k: [] for k in ("ours_ms", "ours_gap", "fw_gap", "speedup_vs_libmtl", "libmtl_gap", "tj_gap")}
    for kind in args.kinds:
        for d in args.dims:
            for T in args.tasks:
                J = make_jacobian(kind, T, d, gen)
                t_gram, G32 = bench(lambda J=J: J @ J.T, args.min_time, 20, 60)
                G = G32.double()  # what every Gramian-based solver sees: the float32 Gramian, in float64
                M = G.numpy()
                t_ref, a_ref = bench(lambda M=M: qp_reference(M), args.min_time, 50, 60)
                f_ref = objective(M, a_ref)

                def gap(alpha, f_ref=f_ref, M=M):
                    return (objective(M, alpha) - f_ref) / f_ref

                t_ours, a = bench(lambda G=G: min_norm(G), args.min_time, 200, 60)
                g_ours = gap(a)
                t_fw, a = bench(lambda M=M: paper_frank_wolfe(M), args.min_time, 50, 60)
                g_fw = gap(a)
                t_lm = g_lm = None
                lm_cell = "n/a"
                if callable(libmtl):
                    try:
                        t_lm, a = bench(lambda J=J: libmtl(J), args.min_time, 20, args.peer_timeout)
                        g_lm = gap(a)
                        lm_cell = fmt_ms(t_lm)
                    except Timeout:
                        lm_cell = f"> {args.peer_timeout:.0f} s (stopped)"
                t_tj = g_tj = None
                if callable(torchjd):
                    t_tj, a = bench(lambda G=G: torchjd(G), args.min_time, 200, 60)
                    g_tj = gap(a)
                rows.append(
                    f"| {kind} | {d // 1000}k | {T} | {fmt_ms(t_gram)} | **{fmt_ms(t_ours)}** | "
                    f"**{fmt_gap(g_ours)}** | {fmt_ms(t_fw)} | {fmt_gap(g_fw)} | {fmt_ms(t_ref)} | "
                    f"{lm_cell} | {fmt_gap(g_lm)} | {fmt_ms(t_tj)} | {fmt_gap(g_tj)} |"
                )
                print(rows[-1], flush=True)
                summary["ours_gap"].append(g_ours)
                summary["ours_ms"].append(t_ours)
                if T >= 40:
                    summary["fw_gap"].append(g_fw)
                    if t_lm is not None:
                        summary["speedup_vs_libmtl"].append((t_lm - t_gram) / t_ours)
                        summary["libmtl_gap"].append(g_lm)
                    if g_tj is not None:
                        summary["tj_gap"].append(g_tj)
                if d == min(args.dims) and T in args.ablation_tasks:
                    alts = {
                        "FW, 250 it. (paper)": lambda M=M: paper_frank_wolfe(M),
                        "FW, 5000 it.": lambda M=M: paper_frank_wolfe(M, 5000, 0.0),
                        "FW 50 it. + support polish": lambda M=M: fw_support_polish(M),
                        "FW + away steps (ours, `away_frank_wolfe`)": lambda G=G: min_norm(
                            G, method="away_frank_wolfe", max_iter=20000
                        ),
                        "active set (ours, default)": lambda G=G: min_norm(G),
                    }
                    cells = []
                    for fn in alts.values():
                        t, a = bench(fn, args.min_time / 2, 50, 60)
                        cells.append(f"{fmt_ms(t)} / {fmt_gap(gap(a))}")
                    ablation.append(f"| {kind} | {T} | " + " | ".join(cells) + " |")
                    ablation_header = list(alts)
    degenerate = degenerate_rows(args)
    return render(args, rows, ablation, ablation_header if ablation else [], summary, libmtl, torchjd, degenerate)


def degenerate_rows(args: argparse.Namespace) -> list[str]:
    """T = 100 Gramians whose minimizer is not unique or whose normal equations are singular: these
    take min_norm's fallback path (Lawson-Hanson on a rank-revealing factor)."""
    rng = np.random.default_rng(args.seed)
    T = 100
    cases = {
        "T > d + 1 (d = 20)": rng.standard_normal((T, 20)),
        "rank 10, d = 20k": rng.standard_normal((T, 10)) @ rng.standard_normal((10, 20_000)),
        "50 gradients, each twice": np.repeat(rng.standard_normal((50, 1000)), 2, axis=0),
        "d = 200, norms e^±8": rng.standard_normal((T, 200)) * np.exp(rng.uniform(-8, 8, (T, 1))),
    }
    out = []
    for name, J in cases.items():
        G = torch.from_numpy(J @ J.T)
        M = G.numpy() / G.numpy().diagonal().max()  # report in units of the largest squared norm
        t, a = bench(lambda G=G: min_norm(G), args.min_time, 200, 60)
        a = a.numpy()
        t_ref, r = bench(lambda M=M: qp_reference(M), args.min_time, 50, 60)
        v = M @ a
        out.append(
            f"| {name} | **{fmt_ms(t)}** | {a @ v:.1e} | {r @ M @ r:.1e} | {a @ v - v.min():.0e} | {fmt_ms(t_ref)} |"
        )
        print(out[-1], flush=True)
    return out


def render(args, rows, ablation, ablation_header, summary, libmtl, torchjd, degenerate) -> str:
    cpu = "unknown CPU"
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines = [
        "# MGDA min-norm solver benchmark",
        "",
        "Generated by `benchmarks/min_norm_bench.py`; regenerate with",
        "",
        f"    {COMMAND}",
        "",
        f"Machine: {cpu}, {torch.get_num_threads()} torch thread(s), Python {platform.python_version()}, "
        f"torch {torch.__version__}, numpy {np.__version__}, scipy {version('scipy')}, "
        f"quadprog {version('quadprog')}, LibMTL {version('LibMTL')}, torchjd {version('torchjd')}. "
        "The machine is shared with other jobs, so absolute times are noisy; all solvers ran "
        "interleaved in one process on the same Jacobians.",
        "",
        "Each cell: median wall time per call (ms) and relative objective gap (f(α) − f*)/f* against "
        "quadprog's exact solution (negative = round-off below the reference), f(α) = αᵀMα evaluated "
        "in float64 after α/Σα. Jacobians are float32 `[T, d]`: *independent* i.i.d. N(0, 1) rows; "
        "*spread*: the same rows scaled to norms log-uniform over [e^-3, e^3] (task gradients of very "
        "different sizes); *correlated*: rows with pairwise correlation 0.8 and norms spread over "
        "[0.5, 2]. The Gramian column is the time of `J @ J.T` (float32), which every Gramian-based "
        "solver needs first; ours, plain Frank-Wolfe, quadprog and TorchJD are timed on that Gramian "
        "converted to float64, LibMTL on the float32 Jacobian (its API; its time includes forming the "
        "Gramian).",
        "",
        "| Jacobian | d | T | Gramian ms | **ours ms** | **ours gap** | plain FW-250 ms | FW gap | "
        "quadprog ms | LibMTL ms | LibMTL gap | TorchJD ms | TorchJD gap |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    if not callable(libmtl):
        lines.append(f"LibMTL: {libmtl}.")
    if not callable(torchjd):
        lines.append(f"TorchJD: {torchjd}.")
    s = summary
    if s["ours_gap"]:
        lines.append(
            f"- Ours: worst gap {max(s['ours_gap']):.0e}, slowest median call "
            f"{fmt_ms(max(s['ours_ms']))} ms (targets: gap ≤ 1e-6, ≤ 2 ms at T = 100)."
        )
    if s["fw_gap"]:
        lines.append(f"- At T ≥ 40, plain Frank-Wolfe's gaps reach {max(s['fw_gap']):.0e}.")
    if s["speedup_vs_libmtl"]:
        lines.append(
            f"- At T ≥ 40, LibMTL's solver is {min(s['speedup_vs_libmtl']):.0f}x to "
            f"{max(s['speedup_vs_libmtl']):.0f}x slower than ours (its time minus the Gramian's) with gaps "
            f"up to {max(s['libmtl_gap']):.1e}."
        )
    if s["tj_gap"]:
        lines.append(f"- At T ≥ 40, TorchJD's MGDA (defaults) has gaps up to {max(s['tj_gap']):.1e}.")
    if ablation:
        lines += [
            "",
            f"## Design alternatives (d = {min(args.dims) // 1000}k, same Jacobians)",
            "",
            "What `min_norm` could have been: Frank-Wolfe as in the paper with more iterations, Frank-Wolfe "
            "followed by an equality-constrained solve on its support, Frank-Wolfe with away steps "
            "(Lacoste-Julien & Jaggi 2015), and the active-set NNLS solver that `min_norm` uses. "
            "Cell: ms / gap.",
            "",
            "| Jacobian | T | " + " | ".join(ablation_header) + " |",
            "|---|---|" + "---|" * len(ablation_header),
            *ablation,
        ]
    if degenerate:
        lines += [
            "",
            "## Degenerate Gramians (T = 100, float64)",
            "",
            "Affinely dependent gradients make the minimizer non-unique and the normal equations singular; "
            "`min_norm` then uses Lawson-Hanson on a rank-revealing Cholesky factor. Objectives in units "
            "of the largest squared gradient norm (so f* ≈ 0 where the origin is in the hull and a "
            "relative gap is meaningless); KKT gap = αᵀMα − min_t (Mα)_t ≥ f(α) − f*.",
            "",
            "| Gradients | **ours ms** | ours f(α) | quadprog f | ours KKT gap | quadprog ms |",
            "|---|---|---|---|---|---|",
            *degenerate,
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    p.add_argument("--kinds", nargs="+", default=["independent", "spread", "correlated"])
    p.add_argument("--dims", nargs="+", type=int, default=[20_000, 100_000])
    p.add_argument("--tasks", nargs="+", type=int, default=[2, 5, 10, 20, 40, 100])
    p.add_argument("--ablation-tasks", nargs="+", type=int, default=[10, 40, 100])
    p.add_argument("--min-time", type=float, default=0.3, help="seconds of repeats per cell (at least)")
    p.add_argument("--peer-timeout", type=float, default=60.0, help="seconds before a LibMTL call is dropped")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    t0 = time.perf_counter()
    text = run(args)
    print(text)
    print(f"total {time.perf_counter() - t0:.0f} s")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(args.out)


if __name__ == "__main__":
    main()
