"""moomtl: multi-task learning as multi-objective optimization.

``moomtl.mtl_backward`` (see :mod:`moomtl.api`) puts any method into your own training loop; the
import stays light (torch and the methods load on first use)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["mtl_backward", "views"]


def __getattr__(name: str) -> Any:
    if name in ("mtl_backward", "views"):
        from moomtl import api

        return getattr(api, name)
    if name in ("methods", "api", "autodiff"):
        import importlib

        return importlib.import_module(f"moomtl.{name}")
    raise AttributeError(f"module 'moomtl' has no attribute {name!r}")
