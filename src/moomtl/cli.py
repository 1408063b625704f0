"""``moomtl`` command line. Thin: parses flags/config, calls library functions, turns user errors
(bad config, missing data) into one readable line and a non-zero exit code (2 for config errors)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from moomtl.config import ConfigError, ExperimentConfig, load_config

app = typer.Typer(
    help=(
        "moomtl: train multi-task models as multi-objective optimization and compare the trade-offs.\n\n"
        "Start with `moomtl demo` (trains a preference sweep on real offline data and writes a Pareto "
        "front), list methods with `moomtl methods`, train one model with "
        "`moomtl train --config cfg.yaml`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(markup=False, soft_wrap=True)  # printed values are text: "[0.5, 0.5]" must not be read as markup
err_console = Console(stderr=True, soft_wrap=True)  # one message = one line
T = TypeVar("T")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file (see README).")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a config key, e.g. --set train.epochs=3 (repeatable)."),
]
MethodOpt = Annotated[
    str | None,
    typer.Option(help="Method name (see `moomtl methods`; a sweep needs one that takes a preference). It "
                      "replaces the config's method section unless that names the same method; give its "
                      "hyper-parameters with --set method.<name>=<value>."),
]


def _fail(kind: str, message: object, code: int) -> typer.Exit:
    """Print ``kind: message`` as one line on stderr (the message's brackets are text, not markup).

    Under ``torchrun`` (``WORLD_SIZE`` > 1) a configuration error is the same on every rank (they read one
    config), so only rank 0 prints it; any other error is prefixed with the rank that raised it (data can
    be missing on one machine only). The exit code is the same on every rank."""
    text = " ".join(str(message).split())  # one line, whatever the exception held
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        rank = os.environ.get("RANK", "0")
        if kind == "config error" and rank != "0":
            return typer.Exit(code)
        text = f"rank {rank}: {text}"
    err_console.print(f"[bold red]{kind}:[/] {escape(text)}", highlight=False)
    return typer.Exit(code)


def _guard(fn: Callable[[], T]) -> T:
    """Run ``fn``; user-facing errors become one line on stderr and an exit code: 2 for configuration
    problems, 1 for data, I/O and training problems. Anything unexpected is one line too (set
    ``MOOMTL_DEBUG=1`` for the traceback)."""
    from moomtl.data.base import DataError
    from moomtl.rundir import RunFolderError
    from moomtl.train.trainer import TrainingError

    try:
        return fn()
    except typer.Exit:
        raise
    except ConfigError as e:
        raise _fail("config error", e, 2) from None
    except DataError as e:
        raise _fail("data error", e, 1) from None
    except TrainingError as e:
        raise _fail("training error", e, 1) from None
    except RunFolderError as e:
        raise _fail("output error", e, 1) from None
    except OSError as e:
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        raise _fail("I/O error", f"{where}{e.strerror or e}", 1) from None
    except MemoryError:
        raise _fail("error", "out of memory; use smaller data.n_* sizes or train.batch_size", 1) from None
    except Exception as e:
        if os.environ.get("MOOMTL_DEBUG"):
            raise
        raise _fail("error", f"{type(e).__name__}: {e} (set MOOMTL_DEBUG=1 for the traceback)", 1) from None


def _config(config: Path | None, overrides: list[str] | None, **flags: Any) -> ExperimentConfig:
    extra = [f"{k}={v}" for k, v in flags.items() if v is not None]
    return load_config(config, [*(overrides or []), *extra])


def _method_overrides(config: Path | None, method: str | None, overrides: list[str] | None) -> list[str]:
    """``--method X`` as config overrides placed *before* the user's ``--set``: the config's method
    section is replaced by ``{name: X}`` unless it already names ``X`` (then its hyper-parameters
    stay), so ``--set method.<param>=<value>`` always reaches the method that runs."""
    if method is None or load_config(config, []).method_name == method:
        return list(overrides or [])
    return [f"method={{name: {method}}}", *(overrides or [])]


@app.command()
def train(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    method: MethodOpt = None,
    epochs: Annotated[int | None, typer.Option(help="Number of epochs.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu (default), cuda, cuda:1 or auto.")] = None,
    out: Annotated[str | None, typer.Option(help="Output folder.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in <out> (same settings, more epochs).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a run already in <out>.")] = False,
    seeds: Annotated[int, typer.Option(help="Train N replicates (train.seed + i; same data split) into "
                                            "<out>/seed_<s> and report mean ± sd (seeds.md, seeds.json); "
                                            "finished seeds are not trained again.")] = 1,
) -> None:
    """Train one model as configured; writes metrics, checkpoint and result.json to the output folder."""
    from moomtl.experiments.run import run_experiment

    def go() -> None:
        if resume and overwrite:
            raise ConfigError("--resume and --overwrite exclude each other")
        cfg = _config(config, _method_overrides(config, method, set_),
                      **{"train.epochs": epochs, "train.device": device, "out": out})
        if config is None:
            console.print(f"no --config given: training moomtl's built-in defaults ({cfg.data.dataset}, "
                          f"{cfg.model.name}, {cfg.method_name}, {cfg.train.epochs} epochs) into {cfg.out}",
                          highlight=False)
        if seeds != 1:
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                raise ConfigError("--seeds trains the replicates one after another; run it without torchrun")
            from moomtl.experiments.report import run_seed_replicates

            console.print(run_seed_replicates(cfg, seeds, console=console, overwrite=overwrite)["markdown"])
            console.print(f"wrote {cfg.out}/seeds.json and seeds.md", highlight=False)
            return
        from moomtl.autodiff.distributed import init_from_environment

        if init_from_environment(cfg.train.device) != 0:  # torchrun: rank 0 reports
            run_experiment(cfg, resume=resume, overwrite=overwrite)
            return
        summary = run_experiment(cfg, resume=resume, overwrite=overwrite)
        if resume:
            start = summary.get("resumed_from", 0)
            console.print("resume: no checkpoint in the folder, started fresh" if start == 0 else
                          f"resume: continued from epoch {start} of {cfg.train.epochs}"
                          + (" (already finished, nothing to train)" if start >= cfg.train.epochs else ""),
                          highlight=False)
        console.print(f"data: {summary['data']}", highlight=False)
        final = summary["final"]
        for key in sorted(k for k in final if k.startswith("test/")):
            console.print(f"{key:24s} {final[key]:.4f}")
        if summary.get("test_mean_acc") is not None:
            mean = summary["test_mean_acc"]
            console.print(f"mean test accuracy over the tasks: {100 * mean:.2f} % "
                          f"(average error {100 * (1 - mean):.2f} %)")
        console.print(f"wrote {cfg.out}/result.json ({summary['wall_seconds']:.1f} s)")

    _guard(go)


@app.command()
def methods(
    markdown: Annotated[bool, typer.Option(help="Print a markdown table (the one in docs/methods.md).")] = False,
) -> None:
    """List the available methods, their one-line descriptions and hyper-parameters."""
    from rich.table import Table

    from moomtl.methods.base import method_catalogue, method_catalogue_markdown

    if markdown:
        typer.echo(method_catalogue_markdown(), nl=False)
        return
    from moomtl.methods.base import available_methods

    table = Table("method", "description", "hyper-parameters (default)", "swept by", "cost")
    classes = available_methods()
    for r in method_catalogue():
        card = classes[r["name"]].card
        table.add_row(r["name"], r["description"], r["hyperparameters"], r["preference"] or "-",
                      card.cost if card is not None else "")
    console.print(table)


@app.command()
def sweep(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    method: MethodOpt = None,
    preferences: Annotated[int, typer.Option(help="Number of preference vectors (Das-Dennis lattice).")] = 11,
    workers: Annotated[int, typer.Option(help="Train this many points in parallel processes.")] = 1,
    backend: Annotated[str, typer.Option(help="Where points train: process (this machine) or ray (Ray tasks; "
                                              "needs the ray extra).")] = "process",
    address: Annotated[str | None, typer.Option(help="With --backend ray: the cluster (auto, ray://HOST:10001, "
                                                     "HOST:6379); default a local Ray.")] = None,
    single_task: Annotated[bool, typer.Option(help="Also train one single-task baseline per task.")] = False,
    out: Annotated[str | None, typer.Option(help="Output folder of the sweep.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Retrain every point and replace the folder's report.")] = False,
    reference_front: Annotated[
        Path | None,
        typer.Option(help="Reference front for IGD/IGD+: another sweep's results.json or a CSV (one column per task)."),
    ] = None,
    seeds: Annotated[int, typer.Option(help="Train every point with N seeds (train.seed + i; same data split), "
                                            "each seed in <out>/seed_<s>; report mean ± sd and the "
                                            "hypervolume per seed.")] = 1,
) -> None:
    """Train one model per preference vector, then write results.json/.md, the front plot and HV/IGD.
    Rerunning the same command resumes: finished points are not trained again."""
    from moomtl.experiments.report import run_preference_sweep

    def go() -> None:
        cfg = _config(config, _method_overrides(config, method, set_), out=out)
        report = run_preference_sweep(
            cfg, method=method, n_preferences=preferences, workers=workers, single_task=single_task,
            console=console, reference_front=reference_front, overwrite=overwrite, seeds=seeds, backend=backend,
            address=address,
        )
        console.print(report.markdown)

    _guard(go)


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Sweep output folders (each with results.json).")],
    out: Annotated[Path, typer.Option(help="Where to write comparison.md and comparison.png.")] = Path(
        "runs/compare"
    ),
) -> None:
    """One markdown table and one overlay plot of several sweeps' fronts (one or several seeds each, see
    `sweep --seeds`): hypervolume and IGD+ as mean ± sd with a bootstrap 95 % interval over seeds, whether
    two sweeps' intervals overlap, Δm against single-task baselines, and degenerate fronts."""
    from moomtl.experiments.report import compare_sweeps

    def go() -> None:
        md = compare_sweeps(runs, out)
        console.print(md)

    _guard(go)


@app.command()
def sparse(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: Annotated[str | None, typer.Option(help="Output folder.")] = None,
) -> None:
    """Sparse MTL (Hotegni et al.): MWC + Augmented Lagrangian with GrOWL prox (search), parameter tying,
    retraining; one run per sparsity weight in sparsity.k0, then the 3-objective front (task losses,
    density) with 2-D projections and accuracy-vs-sparsity plots. Rerunning skips finished points."""
    from moomtl.experiments.sparse import run_sparse

    def go() -> None:
        raw = _config(config, set_, out=out)
        report = run_sparse(raw, console=console)
        console.print(report["markdown"])

    _guard(go)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/demo"),
    epochs: Annotated[int, typer.Option(help="Epochs per model (6 keeps the demo within 5 min on 2 cores).")] = 6,
    preferences: Annotated[int, typer.Option(help="Number of linear-scalarization weight vectors.")] = 7,
    dataset: Annotated[
        str, typer.Option(help="auto (MultiFashion if the Debian data is there, else MultiMNIST), "
                               "multimnist, multifashion")
    ] = "auto",
    workers: Annotated[int, typer.Option(help="Parallel training processes.")] = 1,
) -> None:
    """The main job: a linear-scalarization preference sweep + single-task baselines on real offline
    data; writes pareto.png, results.md and results.json."""
    from moomtl.experiments.demo import run_demo

    def go() -> None:
        run_demo(out=out, epochs=epochs, n_preferences=preferences, dataset=dataset, workers=workers,
                 console=console)

    _guard(go)


@app.command()
def reproduce(
    entry: Annotated[str | None, typer.Argument(help="Entry id (see --list).")] = None,
    list_: Annotated[bool, typer.Option("--list", help="One line per entry: id, paper, table/figure, data, "
                                                       "--quick and full times.")] = False,
    quick: Annotated[bool, typer.Option(help="Fewer instances/epochs (see --list for the time).")] = False,
    seeds: Annotated[int, typer.Option(help="Number of seeds (mean ± sd over them).")] = 5,
    root: Annotated[Path | None, typer.Option(help="Data folder, for entries that need data.")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default runs/reproduce/<id>).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace another entry's results in <out>.")] = False,
) -> None:
    """Reproduce a seed paper's table or figure: writes results.md (columns paper and ours), results.json
    and plots into --out."""

    def go() -> None:
        from moomtl.experiments.reproduce import list_lines
        from moomtl.experiments.reproduce import reproduce as run_entry

        if list_:
            for line in list_lines():
                console.print(line, highlight=False)
            return
        if entry is None:
            raise ConfigError("give an entry id, or --list to see them")
        folder = out if out is not None else Path("runs/reproduce") / entry
        _, md = run_entry(entry, folder, quick=quick, seeds=seeds, root=root, overwrite=overwrite,
                          console=console)
        console.print(md, highlight=False)
        console.print(f"wrote {folder}/results.md and results.json", highlight=False)

    _guard(go)


@app.command()
def select(
    folder: Annotated[Path, typer.Argument(help="A `moomtl sweep` output folder (or a folder holding runs).")],
    preference: Annotated[
        str | None, typer.Option(help="Weights w1,w2,... (one per task, ≥ 0): larger w_t asks for a lower val "
                                      "loss of task t (uniform when only constraints are given).")
    ] = None,
    minimum: Annotated[
        list[str] | None, typer.Option("--min", help="Constraint TASK/METRIC=v: validation METRIC ≥ v (repeatable).")
    ] = None,
    maximum: Annotated[
        list[str] | None, typer.Option("--max", help="Constraint TASK/METRIC=v: validation METRIC ≤ v (repeatable).")
    ] = None,
    export: Annotated[
        Path | None, typer.Option(help="Write the chosen model's state dict here (e.g. best.pt), its config to "
                                       "best.yaml and the selection to best.json.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace existing --export files.")] = False,
) -> None:
    """Choose the model of a front that best meets a preference or constraints on VALIDATION metrics
    (minimum weighted Chebyshev distance of the normalized val losses to the ideal, among the points
    meeting every --min/--max), report its test metrics, and optionally export it."""
    from moomtl.experiments.select import NoPointMeets, export_selection, select_model, selection_lines

    def go() -> None:
        if export is not None:  # a bad --export is reported before any model is read
            from moomtl.experiments.select import export_paths

            export_paths(export)
        try:
            sel = select_model(folder, preference, minimum or (), maximum or ())
        except NoPointMeets as e:
            raise _fail("no point meets the constraints", e, 1) from None
        for line in selection_lines(sel):
            console.print(line, highlight=False)
        if export is not None:
            written = export_selection(sel, export, overwrite=overwrite)
            console.print(f"wrote {', '.join(map(str, written))}", highlight=False)

    _guard(go)


@app.command()
def psl(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    method: MethodOpt = None,
    preferences: Annotated[int, typer.Option(help="Evaluate on this many preferences (Das-Dennis lattice).")] = 11,
    out: Annotated[str | None, typer.Option(help="Output folder.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in <out> (same settings, more epochs).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a run already in <out>.")] = False,
) -> None:
    """Pareto-set learning: train ONE preference-conditioned model (FiLM/LoRA encoder, hypernetwork heads;
    config section `psl`) with the method's scalarization at a Dirichlet preference per batch, then write
    its front on a preference lattice like a sweep (results.json with "kind": "psl", results.md, plot)."""
    from moomtl.psl import load_psl_config, run_psl

    def go() -> None:
        overrides = list(set_ or [])
        if method is not None:
            overrides = [f"method={{name: {method}}}", *overrides]
        cfg, pcfg = load_psl_config(config, [*overrides, *([f"out={out}"] if out is not None else [])])
        rep = run_psl(cfg, pcfg, n_preferences=preferences, resume=resume, overwrite=overwrite, console=console)
        if resume:
            start = rep.resumed_from
            console.print("resume: no checkpoint in the folder, started fresh" if start == 0 else
                          f"resume: continued from epoch {start} of {cfg.train.epochs}", highlight=False)
        console.print(rep.report.markdown, highlight=False)
        console.print(f"trained {rep.summary['train_steps']} steps in {rep.summary['wall_seconds']:.1f} s; "
                      f"wrote {cfg.out}/results.json", highlight=False)

    _guard(go)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
