"""Choose one model from a trained front (``moomtl select``), on **validation** data only.

Sources (``DIR``):

* a ``moomtl sweep`` folder: its ``results.json`` lists the points (``rows[*].run_dir``); every point is
  a run folder whose ``result.json`` holds the final ``val/<task>/<metric>`` metrics (the rows of
  ``results.json`` carry test metrics only, so validation metrics are read from the point folders
  unless a row carries ``val/...`` keys itself);
* any folder holding run folders (a ``moomtl reproduce`` output, a folder of sweeps, one run
  folder): every folder below ``DIR`` with a ``result.json`` and a ``config.yaml`` is a point;
* a Pareto-set-learning run (``results.json`` with ``"kind": "psl"``), read with
  ``moomtl.psl.load_psl_run`` (see :func:`select_psl`).

Rule. Let ``L[p, t]`` be point ``p``'s validation loss on task ``t``. The losses are normalized by the
front's extent, ``z[p, t] = (L[p, t] − ideal_t) / (nadir_t − ideal_t)``, where ``ideal_t`` is the
smallest loss of task ``t`` over all points and ``nadir_t`` the largest over the *non-dominated*
points (a zero range counts as 1). With the preference ``w`` (non-negative, not all zero, one weight
per task, scaled to sum 1; uniform when not given) each point scores its weighted Chebyshev
(Tchebycheff) distance to the ideal,

    ``d(p) = max_t w_t z[p, t]``,

the scalarization the ``tch`` method trains with, so a larger ``w_t`` asks for a smaller loss of task
``t``. Ties are broken by ``Σ_t w_t z[p, t]`` (augmented Chebyshev), then by the order of the
points. Constraints ``--min TASK/METRIC=v`` (validation ``METRIC ≥ v``) and ``--max TASK/METRIC=v``
(``≤ v``) filter the points first; the scores (and the normalization, computed over all points so a
preference means the same with and without constraints) are unchanged. ``METRIC`` is any validation
metric of the task (``loss``, ``acc``, ``miou``, ``l1``, ...; ``err`` = 1 − ``acc`` where there is an
``acc``). When no point meets every constraint, :class:`NoPointMeets` names the closest one: the
point with the smallest total violation, each violation divided by the metric's range over the
points.

Test metrics are only reported for the chosen model; they never take part in the choice.

Seeds. A point of a ``moomtl sweep --seeds N`` folder (a row with ``run_dirs``, one folder
``seed_<s>/<point>`` per seed) is the **mean over its seeds**: its validation metrics are the seed
means of every seed's own ``result.json`` (the choice uses those), its test metrics are reported as
mean ± sample sd over the n seeds. Every seed's run must be finished (else :class:`RunFolderError`).
A mean is no single model: ``--export`` writes the seed whose own validation losses have the smallest
weighted Chebyshev value (normalized with the front's ideal and nadir, ties by the weighted sum, then
the seed order), and the selection says which seed that is and why.
"""

from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moomtl import io as mio
from moomtl.config import ConfigError
from moomtl.rundir import RunFolderError, read_folder_json
from moomtl.tasks import metric_higher_is_better

RESULTS_JSON = "results.json"
RESULT = "result.json"
#: Preferences a PSL run is evaluated at when constraints are given: ``lattice_for(PSL_GRID, T)``.
PSL_GRID = 21
#: Metrics that improve downwards although :func:`metric_higher_is_better` does not know them.
LOWER_IS_BETTER = frozenset({"loss", "err"})


class NoPointMeets(Exception):
    """No point of the front meets every constraint; the message (one line) names the closest point.
    The CLI exits with code 1."""


def higher_is_better(metric: str) -> bool:
    """Direction of a reported metric: ``loss`` and ``err`` go down, the rest as the tasks say."""
    return False if metric in LOWER_IS_BETTER else metric_higher_is_better(metric)


# --- pure math --------------------------------------------------------------------------------------


def normalize_losses(losses: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(z, ideal, nadir)``: losses ``[N, T]`` scaled per task to the front's extent (ideal over all
    points, nadir over the non-dominated ones; a zero range counts as 1).

    >>> z, ideal, nadir = normalize_losses(np.array([[1.0, 4.0], [2.0, 2.0], [3.0, 5.0]]))
    >>> z.tolist(), ideal.tolist(), nadir.tolist()
    ([[0.0, 1.0], [1.0, 0.0], [2.0, 1.5]], [1.0, 2.0], [2.0, 4.0])
    """
    from moomtl.pareto.dominance import non_dominated

    losses = np.asarray(losses, dtype=float)
    ideal = losses.min(axis=0)
    nadir = losses[non_dominated(losses)].max(axis=0)
    span = np.where(nadir > ideal, nadir - ideal, 1.0)
    return (losses - ideal) / span, ideal, nadir


def chebyshev_scores(z: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(max_t w_t z[p, t], Σ_t w_t z[p, t])`` per point: the score and its tie-break."""
    wz = np.asarray(z, dtype=float) * np.asarray(weights, dtype=float)[None, :]
    return wz.max(axis=1), wz.sum(axis=1)


def best_index(scores: np.ndarray, tiebreak: np.ndarray, allowed: np.ndarray) -> int:
    """The allowed point with the smallest ``(score, tiebreak, index)``; ``-1`` when none is allowed."""
    order = np.lexsort((np.arange(len(scores)), tiebreak, scores))  # last key sorts first
    for i in order:
        if allowed[i]:
            return int(i)
    return -1


def violations(values: np.ndarray, bounds: np.ndarray, is_min: np.ndarray) -> np.ndarray:
    """``[N, C]`` amounts by which each point misses each constraint (0 where it is met): ``bound −
    value`` for a lower bound, ``value − bound`` for an upper one."""
    gap = np.where(is_min[None, :], bounds[None, :] - values, values - bounds[None, :])
    return np.maximum(gap, 0.0)


def closest_index(values: np.ndarray, viol: np.ndarray) -> int:
    """The point with the smallest total violation, each constraint's violation divided by that
    metric's range over the points (1 where it is constant)."""
    span = values.max(axis=0) - values.min(axis=0)
    span = np.where(span > 0, span, 1.0)
    return int(np.argmin((viol / span[None, :]).sum(axis=1)))


# --- user input -------------------------------------------------------------------------------------


def parse_preference(text: str | Sequence[float], task_names: Sequence[str]) -> np.ndarray:
    """``"1,3"`` → ``[0.25, 0.75]``: one non-negative finite weight per task, not all zero, scaled to sum 1."""
    if isinstance(text, str):
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            raise ConfigError(f"--preference {text!r}: expected comma-separated numbers, e.g. 0.3,0.7") from None
    else:
        values = [float(v) for v in text]
    shown = ",".join(f"{v:g}" for v in values)
    if len(values) != len(task_names):
        raise ConfigError(f"--preference {shown}: needs one weight per task ({len(task_names)}: "
                          f"{', '.join(task_names)}), got {len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise ConfigError(f"--preference {shown}: weights must be finite numbers")
    if any(v < 0 for v in values):
        raise ConfigError(f"--preference {shown}: weights must be non-negative")
    total = sum(values)
    if total <= 0:
        raise ConfigError(f"--preference {shown}: at least one weight must be positive")
    return np.array(values, dtype=float) / total


@dataclass(frozen=True)
class Constraint:
    """``task/metric ≥ value`` (``is_min``) or ``≤ value``, on validation metrics."""

    task: str
    metric: str
    value: float
    is_min: bool

    @property
    def key(self) -> str:
        return f"{self.task}/{self.metric}"

    def text(self) -> str:
        return f"{self.key} {'≥' if self.is_min else '≤'} {self.value:g}"


def parse_constraint(text: str, is_min: bool, task_names: Sequence[str], available: Mapping[str, Any]) -> Constraint:
    """``"left/acc=0.9"`` → a :class:`Constraint`, checked against the tasks and the validation
    metrics every point has (``available``: ``{"<task>/<metric>": ...}``)."""
    flag = "--min" if is_min else "--max"
    key, sep, raw = text.partition("=")
    task, slash, metric = key.strip().rpartition("/")
    if not sep or not slash or not task or not metric:
        raise ConfigError(f"{flag} {text!r}: expected TASK/METRIC=VALUE, e.g. {flag} {task_names[0]}/acc=0.9")
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: {raw.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise ConfigError(f"{flag} {text!r}: the bound must be finite")
    if task not in task_names:
        raise ConfigError(f"{flag} {text!r}: unknown task {task!r}; the tasks are {', '.join(task_names)}")
    metrics = [k.rpartition("/")[2] for k in available if k.rpartition("/")[0] == task]
    if metric not in metrics:
        raise ConfigError(f"{flag} {text!r}: task {task} has no validation metric {metric!r}; it has "
                          f"{', '.join(metrics)}")
    return Constraint(task=task, metric=metric, value=value, is_min=is_min)


# --- the points -------------------------------------------------------------------------------------


@dataclass
class SeedRun:
    """One seed's run of a multi-seed point: its training seed, folder and own final metrics."""

    seed: int
    run_dir: Path
    val: dict[str, float]
    test: dict[str, float]


@dataclass
class Candidate:
    """One model of the front: its validation metrics (``{"<task>/<metric>": v}``), its test metrics
    when known, and where it lives (a run folder, or a preference of a PSL run). A multi-seed point has
    ``seeds`` (every seed's run), seed-mean ``val`` and ``test``, the sample sd of the test metrics in
    ``test_sd`` and no single ``run_dir``."""

    label: str
    val: dict[str, float]
    test: dict[str, float] = field(default_factory=dict)
    run_dir: Path | None = None
    preference: list[float] | None = None
    seeds: list[SeedRun] = field(default_factory=list)
    test_sd: dict[str, float] = field(default_factory=dict)


@dataclass
class Selection:
    source: Path
    kind: str  # "sweep", "runs" or "psl"
    task_names: list[str]
    candidates: list[Candidate]
    weights: np.ndarray
    constraints: list[Constraint]
    scores: np.ndarray
    tiebreak: np.ndarray
    feasible: np.ndarray
    ideal: np.ndarray
    nadir: np.ndarray
    index: int
    rule: str
    psl_run: Any = None

    @property
    def chosen(self) -> Candidate:
        return self.candidates[self.index]

    def seed_scores(self) -> tuple[np.ndarray, np.ndarray]:
        """``(score, tiebreak)`` of each seed of the chosen point: the weighted Chebyshev value of that
        seed's own validation losses, normalized with the front's ideal and nadir (empty: one seed)."""
        c = self.chosen
        if not c.seeds:
            return np.zeros(0), np.zeros(0)
        losses = np.array([[r.val[f"{t}/loss"] for t in self.task_names] for r in c.seeds], dtype=float)
        span = np.where(self.nadir > self.ideal, self.nadir - self.ideal, 1.0)
        return chebyshev_scores((losses - self.ideal) / span, self.weights)

    @property
    def export_seed(self) -> SeedRun | None:
        """The seed ``--export`` writes for a multi-seed point (the smallest own Chebyshev value)."""
        c = self.chosen
        if not c.seeds:
            return None
        score, tie = self.seed_scores()
        return c.seeds[best_index(score, tie, np.ones(len(score), dtype=bool))]

    @property
    def export_run_dir(self) -> Path | None:
        """The run folder of the model ``--export`` writes (``None`` for a PSL run)."""
        seed = self.export_seed
        return seed.run_dir if seed is not None else self.chosen.run_dir

    def export_reason(self) -> str:
        """Why :attr:`export_seed` is the seed exported (one line)."""
        seed = self.export_seed
        assert seed is not None
        score, _ = self.seed_scores()
        each = ", ".join(f"seed {r.seed} {v:.4g}" for r, v in zip(self.chosen.seeds, score, strict=True))
        return (f"the point is the mean of {len(score)} seeds, not one model; seed {seed.seed} has the smallest "
                f"weighted Chebyshev value of its own validation losses (normalized like the points; {each})")

    def to_dict(self) -> dict[str, Any]:
        c = self.chosen
        chosen: dict[str, Any] = {
            "label": c.label, "run_dir": str(self.export_run_dir) if self.export_run_dir else None,
            "preference": c.preference, "score": float(self.scores[self.index]), "val": c.val, "test": c.test}
        if c.seeds:
            score, _ = self.seed_scores()
            seed = self.export_seed
            assert seed is not None
            chosen.update({
                "n_seeds": len(c.seeds), "test_sd": c.test_sd,
                "seeds": [{"seed": r.seed, "run_dir": str(r.run_dir), "score": float(v), "val": r.val, "test": r.test}
                          for r, v in zip(c.seeds, score, strict=True)],
                "exported_seed": {"seed": seed.seed, "run_dir": str(seed.run_dir), "reason": self.export_reason()}})
        return {
            "source": str(self.source), "kind": self.kind, "task_names": self.task_names, "rule": self.rule,
            "preference": self.weights.tolist(), "constraints": [k.text() for k in self.constraints],
            "ideal_val_loss": self.ideal.tolist(), "nadir_val_loss": self.nadir.tolist(),
            "chosen": chosen,
            "points": [{"label": p.label, "score": float(s), "meets_constraints": bool(f)}
                       for p, s, f in zip(self.candidates, self.scores, self.feasible, strict=True)],
        }


def _split_metrics(final: Mapping[str, Any], split: str) -> dict[str, float]:
    """``{"val/left/acc": 0.9, ...}`` → ``{"left/acc": 0.9}`` for one split, with ``err = 1 − acc``."""
    prefix = f"{split}/"
    out = {k[len(prefix):]: float(v) for k, v in final.items()
           if k.startswith(prefix) and isinstance(v, int | float) and not isinstance(v, bool)}
    return with_err(out)


def with_err(metrics: Mapping[str, float]) -> dict[str, float]:
    out = dict(metrics)
    for key, v in metrics.items():
        task, _, metric = key.rpartition("/")
        if metric == "acc" and f"{task}/err" not in out:
            out[f"{task}/err"] = 1.0 - v
    return out


def _tasks_of(metrics: Mapping[str, float]) -> list[str]:
    tasks: list[str] = []
    for key in metrics:
        t = key.rpartition("/")[0]
        if t not in tasks:
            tasks.append(t)
    return tasks


def _run_metrics(run_dir: Path) -> dict[str, Any]:
    """A finished run's final metrics: ``result.json``'s ``final``, else ``final_metrics.json``."""
    from moomtl.experiments.run import read_run_result

    if (run_dir / RESULT).is_file():
        return read_run_result(run_dir)["final"]
    path = run_dir / "final_metrics.json"
    try:
        final = mio.read_json(path)
    except (OSError, ValueError) as e:
        raise RunFolderError(f"{run_dir} holds no finished run ({RESULT} missing; {path.name}: {e})") from None
    if not isinstance(final, dict):
        raise RunFolderError(f"{path} is not a moomtl metrics file")
    return final


def _point_dir(folder: Path, run_dir: Any) -> Path | None:
    """A sweep row's point folder: the sweep folder's own child of that name (sweeps may be moved),
    ``seed_<s>/<name>`` for a seed of a multi-seed sweep, else the path as written; ``None`` when it
    holds no finished run."""
    if not isinstance(run_dir, str) or not run_dir:
        return None
    path = Path(run_dir)
    if SEED_FOLDER.fullmatch(path.parent.name) and (folder / path.parent.name).is_dir():
        # a seed of a multi-seed sweep whose seed folder is here: only this copy counts (never the original's)
        inside = folder / path.parent.name / path.name
        return inside if (inside / RESULT).is_file() or (inside / "final_metrics.json").is_file() else None
    for cand in (folder / path.name, path):
        if (cand / RESULT).is_file() or (cand / "final_metrics.json").is_file():
            return cand
    return None


#: A seed replicate's folder in a multi-seed sweep (``moomtl.experiments.sweep.SEED_DIR``).
SEED_FOLDER = re.compile(r"seed_(-?\d+)")


def _seed_mean(metrics: Sequence[Mapping[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """``(mean, sample sd)`` over seeds of every metric all seeds have."""
    keys = [k for k in metrics[0] if all(k in m for m in metrics)]
    values = {k: np.array([m[k] for m in metrics], dtype=float) for k in keys}
    return ({k: float(v.mean()) for k, v in values.items()},
            {k: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for k, v in values.items()})


def _seed_candidate(folder: Path, row: Mapping[str, Any], label: str, run_dirs: Sequence[Any],
                    seeds: Sequence[Any]) -> Candidate:
    """A multi-seed point: every seed's finished run, seed-mean val and test metrics, test sd."""
    runs = []
    for i, raw in enumerate(run_dirs):
        name = Path(raw).parent.name if isinstance(raw, str) else ""
        match = SEED_FOLDER.fullmatch(name)
        seed = int(match.group(1)) if match else int(seeds[i]) if i < len(seeds) else i
        run_dir = _point_dir(folder, raw)
        if run_dir is None:
            raise RunFolderError(f"{folder}: point {label!r}: the run of seed {seed} ({raw}) is missing or unfinished "
                                 f"(no {RESULT}); finish the sweep (rerun `moomtl sweep` with the same --seeds)")
        final = _run_metrics(run_dir)
        runs.append(SeedRun(seed=seed, run_dir=run_dir, val=_split_metrics(final, "val"),
                            test=_split_metrics(final, "test")))
    val, _ = _seed_mean([r.val for r in runs])
    test, test_sd = _seed_mean([r.test for r in runs])
    pref = row.get("preference")
    return Candidate(label=label, val=val, test=test, preference=list(pref) if isinstance(pref, list) else None,
                     seeds=runs, test_sd=test_sd)


def _sweep_candidates(folder: Path, res: Mapping[str, Any]) -> list[Candidate]:
    out = []
    seeds = res.get("seeds") if isinstance(res.get("seeds"), list) else []
    for row in res["rows"]:
        if not isinstance(row, dict):
            raise RunFolderError(f"{folder / RESULTS_JSON} has a row that is not a mapping")
        label = str(row.get("label", row.get("run_dir", "?")))
        run_dirs = row.get("run_dirs")
        if isinstance(run_dirs, list) and len(run_dirs) > 1:
            out.append(_seed_candidate(folder, row, label, run_dirs, seeds))
            continue
        run_dir = _point_dir(folder, row.get("run_dir"))
        val = with_err(row["val"]) if isinstance(row.get("val"), dict) else _split_metrics(row, "val")
        test: dict[str, float] = {}
        if run_dir is not None:
            final = _run_metrics(run_dir)
            val = val or _split_metrics(final, "val")
            test = _split_metrics(final, "test")
        elif not val:
            raise RunFolderError(f"{folder}: the folder of point {label!r} ({row.get('run_dir')}) is missing, and "
                                 "its row has no validation metrics")
        pref = row.get("preference")
        out.append(Candidate(label=label, val=val, test=test, run_dir=run_dir,
                             preference=list(pref) if isinstance(pref, list) else None))
    return out


def _discovered_candidates(folder: Path) -> list[Candidate]:
    """Every run folder at or below ``folder`` (a ``result.json`` next to a ``config.yaml``)."""
    runs = sorted({p.parent for p in folder.rglob(RESULT) if (p.parent / "config.yaml").is_file()})
    out = []
    for run_dir in runs:
        summary = _read_results(run_dir, RESULT)
        if summary is not None and summary.get("kind") == "psl":
            continue  # a Pareto-set-learning run is a set of models, selected from on its own
        final = _run_metrics(run_dir)
        rel = run_dir.relative_to(folder).as_posix()
        out.append(Candidate(label=rel if rel != "." else run_dir.name, val=_split_metrics(final, "val"),
                             test=_split_metrics(final, "test"), run_dir=run_dir))
    return out


def load_front(folder: str | Path) -> tuple[str, list[str], list[Candidate]]:
    """``(kind, task_names, candidates)`` of a sweep folder or a folder holding runs (not PSL runs:
    see :func:`select_psl`). Folders whose points have no validation metrics are refused."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder; give a `moomtl sweep` (or reproduce) output folder")
    res = _read_results(folder)
    if res is not None and isinstance(res.get("rows"), list) and res["rows"] \
            and all(isinstance(r, dict) and "run_dir" in r for r in res["rows"]):
        kind, cands = "sweep", _sweep_candidates(folder, res)
    else:
        kind, cands = "runs", _discovered_candidates(folder)
    if not cands:
        raise ConfigError(f"{folder} holds no finished moomtl runs (no results.json with points, no sub-folder "
                          f"with {RESULT}); give a `moomtl sweep` output folder")
    task_names = list(res["task_names"]) if kind == "sweep" and isinstance(res.get("task_names"), list) \
        else _tasks_of(cands[0].val or cands[0].test)
    for c in cands:
        missing = [t for t in task_names if f"{t}/loss" not in c.val]
        if missing:
            raise ConfigError(f"{folder}: point {c.label!r} has no validation metrics (val/{missing[0]}/loss); "
                              "selection uses validation data only, never test: train the sweep with a "
                              "validation split (data.n_val > 0)")
        if set(_tasks_of(c.val)) != set(task_names):
            raise ConfigError(f"{folder}: point {c.label!r} has tasks {_tasks_of(c.val)}, others {task_names}; "
                              "give one sweep's folder")
    return kind, task_names, cands


def _read_results(folder: Path, name: str = RESULTS_JSON) -> dict[str, Any] | None:
    path = folder / name
    if not path.is_file():
        return None
    return read_folder_json(path, lambda r: isinstance(r, dict), "is not a moomtl report")


def _choose(
    source: Path, kind: str, task_names: list[str], cands: list[Candidate], preference: str | Sequence[float] | None,
    minimums: Sequence[str], maximums: Sequence[str], psl_run: Any = None,
) -> Selection:
    weights = (parse_preference(preference, task_names) if preference is not None
               else np.full(len(task_names), 1.0 / len(task_names)))
    common = {k: None for k in cands[0].val if all(k in c.val for c in cands)}
    constraints = [parse_constraint(t, True, task_names, common) for t in minimums]
    constraints += [parse_constraint(t, False, task_names, common) for t in maximums]
    losses = np.array([[c.val[f"{t}/loss"] for t in task_names] for c in cands], dtype=float)
    if not np.isfinite(losses).all():
        raise RunFolderError(f"{source}: some validation losses are not finite")
    z, ideal, nadir = normalize_losses(losses)
    scores, tiebreak = chebyshev_scores(z, weights)
    feasible = np.ones(len(cands), dtype=bool)
    if constraints:
        values = np.array([[c.val[k.key] for k in constraints] for c in cands], dtype=float)
        viol = violations(values, np.array([k.value for k in constraints]), np.array([k.is_min for k in constraints]))
        feasible = (viol <= 0).all(axis=1)
        if not feasible.any():
            raise NoPointMeets(_none_meets_line(source, cands, constraints, values, viol))
    index = best_index(scores, tiebreak, feasible)
    rule = ("minimum weighted Chebyshev distance max_t w_t z_t of the normalized validation losses "
            "z_t = (L_t - ideal_t) / (nadir_t - ideal_t) to the ideal"
            + (", among the points meeting every constraint" if constraints else ""))
    return Selection(source=source, kind=kind, task_names=task_names, candidates=cands, weights=weights,
                     constraints=constraints, scores=scores, tiebreak=tiebreak, feasible=feasible, ideal=ideal,
                     nadir=nadir, index=index, rule=rule, psl_run=psl_run)


def _none_meets_line(source: Path, cands: Sequence[Candidate], constraints: Sequence[Constraint],
                     values: np.ndarray, viol: np.ndarray) -> str:
    i = closest_index(values, viol)
    parts = [f"{k.key} {values[i, j]:.6g} ({'ok' if viol[i, j] <= 0 else 'needs ' + k.text().split(' ', 1)[1]})"
             for j, k in enumerate(constraints)]
    return (f"none of the {len(cands)} points of {source} meets {', '.join(k.text() for k in constraints)} "
            f"(validation metrics); closest: {cands[i].label} with val {', '.join(parts)}")


def select_model(
    folder: str | Path, preference: str | Sequence[float] | None = None,
    minimums: Sequence[str] = (), maximums: Sequence[str] = (),
) -> Selection:
    """The point of ``folder`` that best meets ``preference`` and the ``--min``/``--max`` constraints
    (``"task/metric=value"`` strings) on validation data, by the rule of the module docstring.
    Raises :class:`ConfigError` for bad input, :class:`NoPointMeets` when no point meets the constraints."""
    folder = Path(folder)
    if preference is None and not minimums and not maximums:
        raise ConfigError("give --preference w1,w2,... and/or constraints --min/--max TASK/METRIC=VALUE")
    if folder.is_dir():
        res = _read_results(folder)
        if res is not None and res.get("kind") == "psl":
            return select_psl(folder, res, preference, minimums, maximums)
    kind, task_names, cands = load_front(folder)
    return _choose(folder, kind, task_names, cands, preference, minimums, maximums)


# --- Pareto-set learning runs -----------------------------------------------------------------------


def psl_available() -> bool:
    """Whether this moomtl has the Pareto-set-learning module (``moomtl.psl``)."""
    return importlib.util.find_spec("moomtl.psl") is not None


def _load_psl(folder: Path) -> Any:
    if not psl_available():
        raise ConfigError(f"{folder} holds a Pareto-set-learning run (kind psl), but this moomtl has no moomtl.psl "
                          "module to read it; select from a `moomtl sweep` folder instead")
    from moomtl.psl import load_psl_run  # type: ignore[import-not-found,unused-ignore]

    return load_psl_run(folder)


def _metrics_of(raw: Mapping[str, Any], split: str) -> dict[str, float]:
    """A PSL evaluation's metrics, with or without the ``<split>/`` prefix on the keys."""
    prefixed = _split_metrics(raw, split)
    return prefixed or _split_metrics({f"{split}/{k}": v for k, v in raw.items()}, split)


def select_psl(
    folder: Path, res: Mapping[str, Any], preference: str | Sequence[float] | None,
    minimums: Sequence[str], maximums: Sequence[str],
) -> Selection:
    """Selection from a PSL run (``moomtl.psl.load_psl_run``: ``.evaluate(preference, split)`` gives
    ``{"<task>/<metric>": v}``, ``.export(preference, path, overwrite)`` writes the plain model specialised
    to ``preference`` and its config), whose models are indexed by preferences. With a preference and no
    constraints the answer is the model the run maps that preference to. With constraints the run is
    evaluated on validation data at ``lattice_for(PSL_GRID, T)`` (plus the preference, when given) and
    those models are chosen from by the rule of the module docstring."""
    from moomtl.pareto.preferences import lattice_for

    run = _load_psl(folder)
    task_names = [str(t) for t in res.get("task_names", [])]
    if not task_names:
        raise RunFolderError(f"{folder / RESULTS_JSON} (kind psl) has no task_names")
    if preference is not None:
        w = parse_preference(preference, task_names)
        prefs = [w] if not minimums and not maximums else [w, *lattice_for(PSL_GRID, len(task_names))]
    else:
        prefs = list(lattice_for(PSL_GRID, len(task_names)))
    cands = []
    for p in prefs:
        val = _metrics_of(run.evaluate([float(v) for v in p], "val"), "val")
        missing = [t for t in task_names if f"{t}/loss" not in val]
        if missing:
            raise ConfigError(f"{folder}: the PSL run gives no validation metrics (val/{missing[0]}/loss); "
                              "selection uses validation data only, never test")
        label = "preference (" + ", ".join(f"{v:.3g}" for v in p) + ")"
        cands.append(Candidate(label=label, val=val, preference=[float(v) for v in p]))
    sel = _choose(folder, "psl", task_names, cands, preference, minimums, maximums, psl_run=run)
    if not minimums and not maximums:
        sel.index = 0
        sel.rule = "the model the PSL run maps the preference to"
    sel.chosen.test = _metrics_of(run.evaluate(sel.chosen.preference, "test"), "test")
    return sel


# --- export -----------------------------------------------------------------------------------------


def export_paths(path: str | Path) -> tuple[Path, Path, Path]:
    """``(weights, config, selection)`` files of an export to ``path``: ``best.pt`` → ``best.pt``,
    ``best.yaml``, ``best.json``."""
    path = Path(path)
    if path.suffix in (".yaml", ".json"):
        raise ConfigError(f"--export {path}: name the state-dict file (e.g. best.pt); its config goes to "
                          f"{path.with_suffix('.yaml').name} and the selection to {path.with_suffix('.json').name}")
    return path, path.with_suffix(".yaml"), path.with_suffix(".json")


def export_selection(sel: Selection, path: str | Path, overwrite: bool = False) -> list[Path]:
    """Write the chosen model: its state dict (``torch.load(..., weights_only=True)`` reads it), the
    config it was trained with, and the selection (rule, scores, val and test metrics) as JSON. Each
    file is written atomically; existing files are refused unless ``overwrite``."""
    from moomtl.experiments.run import RUN_FILES

    weights, config, info = export_paths(path)
    if weights.is_dir():
        raise ConfigError(f"--export {weights} is a folder; name the state-dict file, e.g. {weights}/best.pt")
    parent = weights.parent
    if (parent / RESULTS_JSON).is_file() or any((parent / n).is_file() for n in RUN_FILES):
        raise ConfigError(f"--export {weights}: {parent} holds a moomtl run or report; export elsewhere")
    existing = [p for p in (weights, config, info) if p.exists()]
    if existing and not overwrite:
        raise ConfigError(f"--export: {', '.join(map(str, existing))} already exist(s); pass --overwrite to replace")
    c = sel.chosen
    written = [weights]
    if sel.kind == "psl":  # the run writes the specialised plain model and its config (each atomically)
        sel.psl_run.export(c.preference, weights, overwrite=True)
        written += [config] if config.is_file() else []
    else:
        run_dir = sel.export_run_dir  # a multi-seed point: the seed of Selection.export_seed
        assert run_dir is not None
        state = _read_state_dict(run_dir / "model.pt")
        mio.torch_save(state, weights)
        source_config = run_dir / "config.yaml"
        if source_config.is_file():
            mio.write_text(config, source_config.read_text(encoding="utf-8"))
            written.append(config)
    mio.write_json(info, {**sel.to_dict(), "weights": weights.name,
                          "config": config.name if config in written else None})
    return [*written, info]


def _read_state_dict(path: Path) -> dict[str, Any]:
    import torch

    if not path.is_file():
        raise RunFolderError(f"{path} not found: the chosen run has no saved model")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt or foreign file: unpickling errors have many types
        raise RunFolderError(f"{path} is not a readable state dict ({type(e).__name__})") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RunFolderError(f"{path} is not a state dict of tensors")
    return dict(state)


# --- report -----------------------------------------------------------------------------------------


def _fmt_metrics(metrics: Mapping[str, float], task_names: Sequence[str],
                 sd: Mapping[str, float] | None = None) -> str:
    """``left/acc↑ 0.9000, ...``; with ``sd`` (seed means) ``left/acc↑ 0.9000 ± 0.0100``."""
    parts = []
    for t in task_names:
        for key, v in metrics.items():
            if key.rpartition("/")[0] == t:
                arrow = "↑" if higher_is_better(key.rpartition("/")[2]) else "↓"
                spread = f" ± {sd[key]:.4f}" if sd is not None and key in sd else ""
                parts.append(f"{key}{arrow} {v:.4f}{spread}")
    return ", ".join(parts)


def selection_lines(sel: Selection) -> list[str]:
    """What ``moomtl select`` prints: the points with their scores, the chosen one, its val and test metrics."""
    c = sel.chosen
    w = "(" + ", ".join(f"{v:.3g}" for v in sel.weights) + ")"
    lines = [f"{len(sel.candidates)} points in {sel.source} ({sel.kind}); tasks {', '.join(sel.task_names)}; "
             f"preference w = {w}" + (f"; constraints {', '.join(k.text() for k in sel.constraints)}"
                                      if sel.constraints else ""),
             f"rule: {sel.rule}", "",
             "| point | " + " | ".join(f"val {t} loss" for t in sel.task_names) + " | score | meets | chosen |",
             "|" + "---|" * (len(sel.task_names) + 4)]
    for i, (p, s, f) in enumerate(zip(sel.candidates, sel.scores, sel.feasible, strict=True)):
        losses = " | ".join(f"{p.val[f'{t}/loss']:.4f}" for t in sel.task_names)
        chosen = "**yes**" if i == sel.index else ""
        lines.append(f"| {p.label} | {losses} | {s:.4f} | {'yes' if f else 'no'} | {chosen} |")
    if c.seeds:
        n = len(c.seeds)
        seed = sel.export_seed
        assert seed is not None
        lines += ["", f"selected: {c.label} (mean of {n} seeds: "
                  + ", ".join(f"seed {r.seed} {r.run_dir}" for r in c.seeds) + ")",
                  f"  val:  {_fmt_metrics(c.val, sel.task_names)} (mean of n = {n} seeds)",
                  "  test: " + (_fmt_metrics(c.test, sel.task_names, c.test_sd) + f" (mean ± sd, n = {n} seeds)"
                                if c.test else "(no test split)"),
                  f"  export: seed {seed.seed} ({seed.run_dir}): {sel.export_reason()}"]
        return lines
    lines += ["", f"selected: {c.label}" + (f" ({c.run_dir})" if c.run_dir else ""),
              f"  val:  {_fmt_metrics(c.val, sel.task_names)}",
              f"  test: {_fmt_metrics(c.test, sel.task_names) if c.test else '(no test split)'}"]
    return lines
