"""Atomic file output: write to a temporary file in the target directory, then ``os.replace`` it, so
an interrupted run never leaves a half-written file behind."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

_TEMP_NAME = re.compile(r"\..+\.[A-Za-z0-9_]+\.tmp")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on error it is removed.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_path(d / "a.txt") as tmp:
    ...     _ = tmp.write_text("hi")
    >>> (d / "a.txt").read_text()
    'hi'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs are meant to be shared
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_with(path: str | Path, mode: str, writer: Callable[[IO[Any]], None]) -> None:
    with atomic_path(path) as tmp, open(tmp, mode) as fh:
        writer(fh)


def write_text(path: str | Path, text: str) -> None:
    _write_with(path, "w", lambda fh: fh.write(text))


def write_json(path: str | Path, obj: Any, *, nonfinite_as_null: bool = False) -> None:
    """Strict JSON (RFC 8259: no ``NaN``/``Infinity``), written atomically.

    A non-finite float raises ``ValueError`` naming where it is, unless ``nonfinite_as_null`` (for logs
    such as a metrics history, where a diverged value is a fact to record): then it is written as
    ``null``.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> write_json(d / "m.json", {"loss": float("nan")}, nonfinite_as_null=True)
    >>> json.loads((d / "m.json").read_text())
    {'loss': None}
    >>> write_json(d / "r.json", {"loss": float("nan")})
    Traceback (most recent call last):
    ...
    ValueError: non-finite value nan at loss; JSON output must be finite
    """
    plain = _strict(obj, "", nonfinite_as_null)
    _write_with(path, "w", lambda fh: json.dump(plain, fh, indent=2, sort_keys=False, allow_nan=False))


def dumps_json(obj: Any) -> str:
    """:func:`write_json`'s strict encoding as a string (raises ``ValueError`` on non-finite floats)."""
    return json.dumps(_strict(obj, "", False), indent=2, allow_nan=False)


def _strict(o: Any, where: str, nonfinite_as_null: bool) -> Any:
    """Plain JSON types, tensors and arrays as lists, paths as strings; non-finite floats checked."""
    if isinstance(o, bool) or o is None or isinstance(o, int | str):
        return o
    if isinstance(o, float):
        if math.isfinite(o):
            return o
        if nonfinite_as_null:
            return None
        raise ValueError(f"non-finite value {o} at {where or 'top level'}; JSON output must be finite")
    if isinstance(o, dict):
        return {str(k): _strict(v, f"{where}.{k}" if where else str(k), nonfinite_as_null) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_strict(v, f"{where}[{i}]", nonfinite_as_null) for i, v in enumerate(o)]
    return _strict(_json_default(o), where, nonfinite_as_null)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporaries :func:`atomic_path` leaves when a process is killed mid-write
    (``.<name>.<random>.tmp``) directly in ``folder``; returns what was removed. Call it only while
    holding the folder's lock (:mod:`moomtl.rundir`), so no live writer's file is touched."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.glob(".*.tmp"):
        if p.is_file() and _TEMP_NAME.fullmatch(p.name):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def torch_save(obj: Any, path: str | Path) -> None:
    import torch  # lazily: plots and JSON output don't need torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):  # tensors and numpy arrays/scalars
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 1 MiB blocks (``hashlib.file_digest`` needs Python 3.11)."""
    digest = hashlib.new(algorithm)
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def read_json(path: str | Path) -> Any:
    """Parse a JSON file strictly (no ``NaN``/``Infinity``); raises ``ValueError`` (with the reason) when
    the file is not UTF-8 or not valid JSON, ``OSError`` when it cannot be read."""
    text = Path(path).read_bytes()
    try:
        return json.loads(text.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e.msg} at line {e.lineno})") from None
