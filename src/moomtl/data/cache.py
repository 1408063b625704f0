"""On-disk cache of built data sets (tensors saved with ``torch.save``, loaded with ``weights_only=True``).

The cache folder is, in order: the ``cache_dir`` argument, the ``MOOMTL_CACHE`` environment variable,
``~/.cache/moomtl``. An entry's file name is ``<name>-<key>.pt`` where the key hashes every build parameter
(and the identity of the source files), so changing any of them builds a new entry. Writes are atomic
(temporary file + ``os.replace``); an unreadable or invalid entry is rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from moomtl.io import torch_save

CACHE_ENV = "MOOMTL_CACHE"
CACHE_FORMAT = 1


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``cache_dir`` if given, else ``$MOOMTL_CACHE``, else ``~/.cache/moomtl`` (not created here)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "moomtl"


def cache_key(params: Mapping[str, Any]) -> str:
    """A stable hex key for JSON-serializable ``params`` (order of keys does not matter).

    >>> cache_key({"a": 1, "b": [2, 3]}) == cache_key({"b": [2, 3], "a": 1})
    True
    """
    text = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def file_fingerprint(paths: list[Path]) -> list[list[Any]]:
    """``[path, size, mtime_ns]`` per file: a cheap identity for source files in a cache key."""
    out = []
    for p in paths:
        st = Path(p).stat()
        out.append([str(Path(p).resolve()), st.st_size, st.st_mtime_ns])
    return out


def load_entry(path: Path, key: str) -> Any | None:
    """The payload stored at ``path`` under ``key``, or None if missing, unreadable or for another key."""
    if not path.is_file():
        return None
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unpickling/zip error means the file is unusable: rebuild it
        warnings.warn(f"cache file {path} is unreadable ({type(e).__name__}); rebuilding it", stacklevel=3)
        return None
    if not (isinstance(entry, dict) and entry.get("format") == CACHE_FORMAT and entry.get("key") == key):
        warnings.warn(f"cache file {path} does not match its key; rebuilding it", stacklevel=3)
        return None
    return entry.get("payload")


def cached(
    name: str,
    params: Mapping[str, Any],
    build: Callable[[], Any],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    enabled: bool = True,
    validate: Callable[[Any], bool] | None = None,
) -> Any:
    """Return the cached payload for ``(name, params)``, or ``build()`` it and store it.

    ``payload`` must be loadable with ``torch.load(weights_only=True)`` (tensors, str, numbers, lists,
    dicts). ``validate(payload) -> bool`` rejects a readable but wrong entry (then it is rebuilt). When the
    cache folder cannot be written, a warning is issued and the built payload is returned uncached.
    """
    if not enabled:
        return build()
    key = cache_key({"name": name, **params})
    path = resolve_cache_dir(cache_dir) / f"{name}-{key}.pt"
    payload = load_entry(path, key)
    if payload is not None:
        if validate is None or validate(payload):
            return payload
        warnings.warn(f"cache file {path} holds invalid data; rebuilding it", stacklevel=2)
    payload = build()
    try:
        stored_params = json.loads(json.dumps(params, default=str))  # plain types only, for weights_only
        torch_save({"format": CACHE_FORMAT, "key": key, "params": stored_params, "payload": payload}, path)
    except OSError as e:
        warnings.warn(f"cannot write cache file {path} ({e}); continuing without cache", stacklevel=2)
    return payload


def cache_path(name: str, params: Mapping[str, Any], cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where :func:`cached` stores ``(name, params)`` (for inspection and tests)."""
    return resolve_cache_dir(cache_dir) / f"{name}-{cache_key({'name': name, **params})}.pt"
