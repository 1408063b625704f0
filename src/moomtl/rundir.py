"""A run folder holds one run, whole: checked before anything is written, locked while a process
writes it, never overwritten without being asked, resumed only with the settings it was started with.

* :func:`check_output_dir` — the folder can be created and written (not a file, not under a file, not
  read-only), checked before any data work so nothing is half-written.
* :func:`locked` — a per-folder lock (``.moomtl.lock``, an OS file lock via ``filelock``: released
  when the process dies, even by ``kill -9``); a second writer gets :class:`RunFolderError` at once.
  While the lock is held, temporaries an interrupted atomic write left behind are deleted.
* :func:`settings_diff` — what differs between the settings a folder was started with and the ones
  given now, ignoring presentation keys and the output path (the same folder named by a relative
  path, or moved, still resumes), and allowing only a larger ``train.epochs``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from moomtl.io import read_json, remove_stale_temporaries

LOCK_NAME = ".moomtl.lock"
#: Keys that do not change what a run computes: they may differ on resume.
PRESENTATION_KEYS = frozenset({"out", "train.progress"})
#: Keys that may grow on resume (continue training for more epochs).
GROWABLE_KEYS = frozenset({"train.epochs"})


class RunFolderError(RuntimeError):
    """The output folder cannot be used (not writable, a file, in use by another process, unreadable
    state). The message is one line; the CLI exits with code 1."""


def check_output_dir(folder: str | Path, what: str = "--out") -> Path:
    """Fail early with :class:`RunFolderError` unless ``folder`` is (or can be created as) a writable
    directory. Nothing is created here."""
    folder = Path(folder)
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = "is a file" if probe == folder else f"is under {probe}, which is a file"
        raise RunFolderError(f"{what} {folder} {where}; give a folder")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise RunFolderError(f"{what} {folder} is not writable ({probe} does not allow writing); choose another folder")
    return folder


@contextmanager
def locked(folder: str | Path, what: str = "--out") -> Iterator[Path]:
    """Create ``folder``, hold its lock for the block, and delete stale temporaries inside it."""
    from filelock import FileLock, Timeout

    folder = check_output_dir(folder, what)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunFolderError(f"{what} {folder}: cannot create it ({e.strerror or e})") from None
    lock = FileLock(folder / LOCK_NAME, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunFolderError(
            f"{folder} is in use by another moomtl process (it holds {folder / LOCK_NAME}); wait for it to "
            "finish or choose another --out"
        ) from None
    except OSError as e:
        raise RunFolderError(f"{what} {folder}: cannot lock it ({e.strerror or e})") from None
    try:
        remove_stale_temporaries(folder)
        yield folder
    finally:
        lock.release()


def has_state(folder: str | Path, names: Iterable[str]) -> list[str]:
    """Which of ``names`` exist in ``folder`` (a run's files: config, checkpoint, results)."""
    folder = Path(folder)
    return [n for n in names if (folder / n).exists()]


def flatten(raw: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"epochs": 3}}`` → ``{"train.epochs": 3}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for k, v in raw.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def settings_diff(saved: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Differences that forbid resuming, as ``key: old → new`` strings (empty: compatible).

    >>> settings_diff({"optimizer": {"lr": 0.01}, "train": {"epochs": 2}, "out": "a"},
    ...               {"optimizer": {"lr": 0.02}, "train": {"epochs": 5}, "out": "b"})
    ['optimizer.lr: 0.01 → 0.02']
    >>> settings_diff({"train": {"epochs": 5}}, {"train": {"epochs": 2}})
    ['train.epochs: 5 → 2 (a resumed run may only get more epochs)']
    """
    a, b = flatten(saved), flatten(new)
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in PRESENTATION_KEYS:
            continue
        old, cur = a.get(key, "(unset)"), b.get(key, "(unset)")
        if old == cur:
            continue
        if key in GROWABLE_KEYS and isinstance(old, int) and isinstance(cur, int):
            if cur >= old:
                continue
            diffs.append(f"{key}: {old} → {cur} (a resumed run may only get more epochs)")
            continue
        diffs.append(f"{key}: {old!r} → {cur!r}" if isinstance(old, str) or isinstance(cur, str)
                     else f"{key}: {old} → {cur}")
    return diffs


def read_folder_json(path: Path, valid: Callable[[Any], bool], invalid: str) -> dict[str, Any]:
    """A JSON file a run folder holds, read strictly: unreadable (I/O, not strict JSON) →
    :class:`RunFolderError` ``<path> is unreadable: <why>``; read but not ``valid`` → ``<path> <invalid>``."""
    try:
        res = read_json(path)
    except (OSError, ValueError) as e:
        raise RunFolderError(f"{path} is unreadable: {e}") from None
    if not valid(res):
        raise RunFolderError(f"{path} {invalid}")
    return res

