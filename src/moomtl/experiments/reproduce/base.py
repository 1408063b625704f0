"""The ``moomtl reproduce`` framework: a registry of entries (one module per paper table/figure), the
result objects they return, and the one place that writes a reproduction's folder.

An entry is a function ``run(out, quick, seeds, root, console) -> ReproResult`` registered with
:func:`register`; every module of this package not starting with ``_`` is imported on first lookup,
so adding an entry is adding a file. Entries compute; they never write: :func:`reproduce` writes
``results.md``, ``results.json`` (strict JSON) and the entry's plots into ``out`` while holding the
folder's lock, and refuses a folder holding another entry's (or another command's) results unless
``overwrite``. Rerunning the same entry into its own folder recomputes it and replaces its files.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console

from moomtl import io as mio
from moomtl.config import ConfigError
from moomtl.rundir import RunFolderError, locked

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"


@dataclass(frozen=True)
class Stat:
    """A measured quantity over seeds: mean ± sd (sample sd; 0 for one seed) and the count ``n``."""

    mean: float
    sd: float
    n: int

    @staticmethod
    def of(values: Sequence[float]) -> Stat:
        vals = [float(v) for v in values]
        if not vals:
            raise ValueError("a statistic needs at least one value")
        m = sum(vals) / len(vals)
        sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
        return Stat(mean=m, sd=sd, n=len(vals))

    def text(self, fmt: str = ".3g") -> str:
        return f"{self.mean:{fmt}} ± {self.sd:{fmt}} (n={self.n})"


@dataclass(frozen=True)
class ReproRow:
    """One checked item: ``paper`` is the paper's number or, where it gives none, the statement checked;
    ``ours`` the measured value or evidence; ``stats`` the numbers behind ``ours``."""

    item: str
    paper: str
    ours: str
    stats: dict[str, Stat] = field(default_factory=dict)
    agrees: bool | None = None


@dataclass
class ReproResult:
    rows: list[ReproRow]
    deviations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: file name → function drawing the plot into that path (the framework calls it inside ``out``)
    plots: dict[str, Callable[[Path], None]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


class EntryRun(Protocol):
    def __call__(self, out: Path, quick: bool, seeds: int, root: Path | None, console: Console) -> ReproResult: ...


@dataclass(frozen=True)
class Entry:
    id: str
    paper: str
    target: str  # "Table 3", "Figure 2", "Theorems 3.1–3.3"
    data: str  # "none (synthetic)" or e.g. "CelebA at --root"
    quick_time: str  # measured on 2 CPU cores
    full_time: str
    run: EntryRun
    needs_root: bool = False

    def line(self) -> str:
        return (f"{self.id}  |  {self.paper}  |  {self.target}  |  data: {self.data}  |  "
                f"--quick: {self.quick_time}  |  full: {self.full_time}")


_REGISTRY: dict[str, Entry] = {}


def register(
    id: str, *, paper: str, target: str, data: str, quick_time: str, full_time: str, needs_root: bool = False,
) -> Callable[[EntryRun], EntryRun]:
    """Function decorator: make ``run`` reproducible as ``moomtl reproduce <id>``."""

    def deco(run: EntryRun) -> EntryRun:
        if id in _REGISTRY and _REGISTRY[id].run is not run:
            raise ValueError(f"reproduce entry {id!r} registered twice")
        _REGISTRY[id] = Entry(id=id, paper=paper, target=target, data=data, quick_time=quick_time,
                              full_time=full_time, run=run, needs_root=needs_root)
        return run

    return deco


def available_entries() -> dict[str, Entry]:
    """``{id: Entry}`` of every registered entry, sorted by id."""
    import moomtl.experiments.reproduce as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_") and info.name != "base":
            importlib.import_module(f"moomtl.experiments.reproduce.{info.name}")
    return dict(sorted(_REGISTRY.items()))


def get_entry(entry_id: str) -> Entry:
    entries = available_entries()
    if entry_id not in entries:
        raise ConfigError(f"unknown reproduce entry {entry_id!r}; choose one of: {', '.join(entries)}")
    return entries[entry_id]


def list_lines() -> list[str]:
    """One line per entry: id, paper, table/figure, data needed, --quick time, full time."""
    return [e.line() for e in available_entries().values()]


def result_markdown(entry: Entry, result: ReproResult, quick: bool, seeds: int, seconds: float) -> str:
    def cell(text: str) -> str:
        return " ".join(str(text).split()).replace("|", "\\|")

    mode = "--quick" if quick else "full run"
    lines = [f"## {entry.id}: {entry.paper}, {entry.target}", "",
             f"`moomtl reproduce {entry.id}{' --quick' if quick else ''} --seeds {seeds}` ({mode}, "
             f"{seconds:.1f} s; data: {entry.data})", "",
             "| item | paper | ours | agrees |", "|---|---|---|---|"]
    for r in result.rows:
        agrees = "—" if r.agrees is None else ("yes" if r.agrees else "**no**")
        lines.append(f"| {cell(r.item)} | {cell(r.paper)} | {cell(r.ours)} | {agrees} |")
    if result.notes:
        lines += ["", *[f"- {n}" for n in result.notes]]
    lines += ["", "Deviations:" if result.deviations else "Deviations: none."]
    lines += [f"- {d}" for d in result.deviations]
    lines += ["", *[f"![{name}]({name})" for name in result.plots]] if result.plots else []
    return "\n".join(lines)


def result_payload(entry: Entry, result: ReproResult, quick: bool, seeds: int, seconds: float) -> dict[str, Any]:
    return {
        "reproduce": entry.id, "paper": entry.paper, "target": entry.target, "data": entry.data,
        "quick": quick, "seeds": seeds, "wall_seconds": seconds, "settings": result.settings,
        "rows": [{"item": r.item, "paper": r.paper, "ours": r.ours, "agrees": r.agrees,
                  "stats": {k: {"mean": s.mean, "sd": s.sd, "n": s.n} for k, s in r.stats.items()}}
                 for r in result.rows],
        "deviations": result.deviations, "notes": result.notes, "plots": list(result.plots),
    }


def _check_owner(out: Path, entry_id: str) -> None:
    path = out / RESULTS_JSON
    if not path.exists():
        return
    try:
        res = mio.read_json(path)
    except (OSError, ValueError) as e:
        raise RunFolderError(f"{path} is unreadable: {e}; choose another --out or pass --overwrite") from None
    owner = res.get("reproduce") if isinstance(res, dict) else None
    if owner != entry_id:
        what = f"the results of reproduce entry {owner!r}" if owner else "results of another moomtl command"
        raise ConfigError(f"{out} holds {what}, not {entry_id!r}; choose another --out, or pass --overwrite to "
                          "replace them")


def reproduce(
    entry_id: str, out: Path, *, quick: bool = False, seeds: int = 5, root: Path | None = None,
    overwrite: bool = False, console: Console | None = None,
) -> tuple[ReproResult, str]:
    """Run one entry and write its folder; returns the result and its markdown."""
    console = console or Console(markup=False, soft_wrap=True)
    entry = get_entry(entry_id)
    if seeds < 1:
        raise ConfigError(f"--seeds must be ≥ 1, got {seeds}")
    if entry.needs_root and root is None:
        raise ConfigError(f"{entry.id} needs {entry.data}: pass --root DIR")
    if root is not None and not Path(root).is_dir():
        raise ConfigError(f"--root {root} is not a folder ({entry.id} needs {entry.data})")
    out = Path(out)
    with locked(out):
        if not overwrite:
            _check_owner(out, entry.id)
        start = time.perf_counter()
        result = entry.run(out=out, quick=quick, seeds=seeds, root=root, console=console)
        seconds = time.perf_counter() - start
        for name, draw in result.plots.items():
            draw(out / name)
        md = result_markdown(entry, result, quick, seeds, seconds)
        mio.write_json(out / RESULTS_JSON, result_payload(entry, result, quick, seeds, seconds))
        mio.write_text(out / RESULTS_MD, md + "\n")
    return result, md
