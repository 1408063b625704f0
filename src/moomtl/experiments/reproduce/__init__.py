"""``moomtl reproduce``: seed papers' tables and figures as registered, runnable entries."""

from __future__ import annotations

from moomtl.experiments.reproduce.base import (
    Entry,
    ReproResult,
    ReproRow,
    Stat,
    available_entries,
    get_entry,
    list_lines,
    register,
    reproduce,
)

__all__ = ["Entry", "ReproResult", "ReproRow", "Stat", "available_entries", "get_entry", "list_lines", "register",
           "reproduce"]
