"""Where sweep points train: in this process, in local worker processes, or as Ray tasks (a local Ray,
or a cluster at ``--address``). A backend only maps "train this point" over the points that are not
finished; which points those are, and the refusal of folders holding other settings, are decided
before any backend runs (:func:`moomtl.experiments.sweep.run_points`), so every backend resumes and
refuses exactly alike.

Ray is an optional extra (``pip install 'moomtl[ray]'``): without it ``--backend ray`` is one clear
line. On a cluster every node must see the sweep folder at the same path (a shared file system): each
point writes its own sub-folder, which is also what a resumed sweep reads.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

from moomtl.config import ConfigError

INSTALL_HINT = "--backend ray needs the ray package: pip install 'moomtl[ray]'"
BACKENDS = ("process", "ray")

Task = Callable[..., dict[str, Any]]


def check_backend(backend: str, address: str | None) -> None:
    if backend not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if address is not None and backend != "ray":
        raise ConfigError("--address is the Ray cluster to use: it needs --backend ray")
    if backend == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError(INSTALL_HINT) from None


def local_map(fn: Task, items: Sequence[Any], workers: int, threads: int, *args: Any) -> Iterator[tuple[Any, dict]]:
    """``fn(item, threads, *args)`` in ``workers`` spawned processes; yields ``(item, result)`` in order."""
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = [(pool.submit(fn, item, threads, *args), item) for item in items]
        for fut, item in futures:
            yield item, fut.result()


def ray_map(fn: Task, items: Sequence[Any], threads: int, *args: Any, address: str | None = None,
            num_cpus: int | None = None) -> Iterator[tuple[Any, dict]]:
    """``fn(item, threads, *args)`` as one Ray task per item (``threads`` CPUs each); yields
    ``(item, result)`` in the order of ``items``. Starts a local Ray (``num_cpus``: default all cores)
    unless ``address`` names a running cluster (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``);
    shuts down only what it started. A task's exception is raised here, as the process backend does."""
    try:
        import ray
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    started = not ray.is_initialized()
    if started:
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if address is None:
            kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ConfigError(f"--address {address}: cannot connect to a Ray cluster ({e})") from None
    try:
        remote = ray.remote(num_cpus=threads)(fn)
        refs = [(remote.remote(item, threads, *args), item) for item in items]
        for ref, item in refs:
            try:
                yield item, ray.get(ref)
            except ray.exceptions.RayTaskError as e:  # the task's own error, as the process backend raises it
                cause = getattr(e, "cause", None)
                raise (cause if isinstance(cause, BaseException) else e) from None
    finally:
        if started:
            ray.shutdown()


__all__ = ["BACKENDS", "INSTALL_HINT", "check_backend", "local_map", "ray_map"]
