"""The training loop's events and the handlers attached to them, with filters.

An :class:`EventEngine` keeps, per :class:`Event`, an ordered list of named :class:`Handler` objects; the
trainer :meth:`~EventEngine.fire`\\ s each event and never names a method or a handler. A handler runs
when its filter says so:

* ``every=k`` — on every ``k``-th occurrence of its event (count 1, 2, ... : the global step for
  ``STEP_END``, the epoch number for ``EPOCH_BEGIN`` / ``EPOCH_END``, 1 for ``TRAIN_BEGIN`` /
  ``TRAIN_END``), i.e. when ``count % k == 0``;
* ``start=s`` — not before count ``s`` (``start=3, every=2``: at 4, 6, 8, ...; ``start`` counts from 1).

Handlers are replaceable and removable by name (``engine.remove("checkpoint")`` detaches it from every
event; ``engine.replace("evaluate", my_eval)``) and insertable before/after another handler of the same
event (``engine.on(Event.EPOCH_END, fn, name="mine", before="checkpoint")``). A name is unique per
event; one object may serve several events under one name (a progress bar opens at ``EPOCH_BEGIN``,
advances at ``STEP_END``, closes at ``EPOCH_END``).

>>> from moomtl.events import TrainState
>>> seen = []
>>> eng = EventEngine()
>>> _ = eng.on(Event.STEP_END, lambda s: seen.append(s.step), name="log", every=2, start=3)
>>> st = TrainState(model=None, optimizer=None)
>>> for step in range(1, 9):
...     st.step = step
...     eng.fire(Event.STEP_END, st)
>>> seen
[4, 6, 8]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

from moomtl.events import TrainState


class Event(str, Enum):
    TRAIN_BEGIN = "train_begin"  # after setup (and after a resume has restored every state)
    EPOCH_BEGIN = "epoch_begin"
    STEP_END = "step_end"  # after optimizer.step() and the step counter's increment
    EPOCH_END = "epoch_end"  # the epoch's training metrics are in state.epoch_metrics
    TRAIN_END = "train_end"  # after the last epoch (also for a resumed run with no epoch left)


HandlerFn = Callable[[TrainState], Any]


def event_count(event: Event, state: TrainState) -> int:
    """The 1-based occurrence number a filter tests for ``event``."""
    if event is Event.STEP_END:
        return state.step
    if event in (Event.EPOCH_BEGIN, Event.EPOCH_END):
        return state.epoch + 1
    return 1


@dataclass
class Handler:
    """A named function on one event, with ``every``/``start`` filters. A handler object may also have
    ``state_dict()``/``load_state_dict()``: the trainer then keeps its state in the checkpoint."""

    name: str
    event: Event
    fn: HandlerFn
    every: int = 1
    start: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"handler {self.name!r}: every must be an integer ≥ 1, got {self.every!r}")
        if not isinstance(self.start, int) or self.start < 1:
            raise ValueError(f"handler {self.name!r}: start must be an integer ≥ 1, got {self.start!r}")

    def due(self, count: int) -> bool:
        return count >= self.start and count % self.every == 0


class EventEngine:
    """Ordered, named, filtered handlers per event (see the module docstring)."""

    def __init__(self) -> None:
        self._handlers: list[Handler] = []

    def on(
        self, event: Event | str, fn: HandlerFn, *, name: str | None = None, every: int = 1, start: int = 1,
        before: str | None = None, after: str | None = None,
    ) -> Handler:
        """Attach ``fn`` to ``event`` (last, or just ``before``/``after`` the handler of that name)."""
        event = Event(event)
        name = name or getattr(fn, "__name__", None) or type(fn).__name__
        if name in self.names(event):
            raise ValueError(f"a handler named {name!r} is already attached to {event.value}; remove or replace it")
        if before is not None and after is not None:
            raise ValueError("give before= or after=, not both")
        handler = Handler(name, event, fn, every, start)
        anchor = before if before is not None else after
        if anchor is None:
            self._handlers.append(handler)
        else:
            i = self._index(anchor, event)
            self._handlers.insert(i if before is not None else i + 1, handler)
        return handler

    def _index(self, name: str, event: Event | None = None) -> int:
        for i, h in enumerate(self._handlers):
            if h.name == name and (event is None or h.event is event):
                return i
        where = f" on {event.value}" if event is not None else ""
        raise KeyError(f"no handler named {name!r}{where}; attached: {', '.join(self.names(event)) or 'none'}")

    def get(self, name: str, event: Event | str | None = None) -> Handler:
        return self._handlers[self._index(name, Event(event) if event is not None else None)]

    def remove(self, name: str, event: Event | str | None = None) -> list[Handler]:
        """Detach the handler called ``name`` (from ``event`` only, or from every event); returns them."""
        ev = Event(event) if event is not None else None
        self._index(name, ev)  # KeyError when there is none
        gone = [h for h in self._handlers if h.name == name and (ev is None or h.event is ev)]
        self._handlers = [h for h in self._handlers if h not in gone]
        return gone

    def replace(self, name: str, fn: HandlerFn, event: Event | str | None = None) -> None:
        """Put ``fn`` in the place (event, filters, order) of the handler(s) called ``name``."""
        ev = Event(event) if event is not None else None
        self._index(name, ev)
        self._handlers = [Handler(h.name, h.event, fn, h.every, h.start)
                          if h.name == name and (ev is None or h.event is ev) else h for h in self._handlers]

    def names(self, event: Event | str | None = None) -> list[str]:
        """Handler names in firing order (of one event, or of all events without repeats)."""
        ev = Event(event) if event is not None else None
        return list(dict.fromkeys(h.name for h in self._handlers if ev is None or h.event is ev))

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def __iter__(self) -> Iterator[Handler]:
        return iter(list(self._handlers))

    def fire(self, event: Event, state: TrainState) -> None:
        count = event_count(event, state)
        for h in [h for h in self._handlers if h.event is event]:
            if h.due(count):
                h.fn(state)

    # --- state of stateful handlers (early stopping, best checkpoint, ...) --------------------------
    def state_dict(self) -> dict[str, Any]:
        """``{name: state}`` of the handler objects that have a ``state_dict`` (one entry per name)."""
        out: dict[str, Any] = {}
        for h in self._handlers:
            if h.name not in out and callable(getattr(h.fn, "state_dict", None)):
                out[h.name] = h.fn.state_dict()
        return out

    def load_state_dict(self, states: dict[str, Any]) -> None:
        done: set[str] = set()
        for h in self._handlers:
            if h.name in states and h.name not in done and callable(getattr(h.fn, "load_state_dict", None)):
                h.fn.load_state_dict(states[h.name])
                done.add(h.name)


__all__ = ["Event", "EventEngine", "Handler", "HandlerFn", "event_count"]
