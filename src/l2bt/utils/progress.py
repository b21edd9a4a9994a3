"""Progress of long work, for people: a process setting, read where bars are made.

On a terminal: a tqdm bar. Logged to a file (a service, `make demo > demo.log`): no bar
but plain lines, one at a step's first update LOG_SECONDS or more after the last progress
line of any step (one clock for the whole process, `LINES`), and a last line for each
step that printed one, so a log of a long run shows a line every LOG_SECONDS plus one
update while steps advance, and a short run prints nothing. Off (`set_progress(False)`,
or `L2BT_PROGRESS=off` in the environment, which the command line reads once): nothing.
tqdm is imported only for a terminal, so a command that shows no bar does not pay for it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

LOG_SECONDS = 20.0  # a line is printed at a step's next update after it: gaps stay < 30 s
OFF_VALUES = ("off", "0", "no")


class LineClock:
    """When the process last printed a progress line, on `clock` (seconds)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.last = clock()

    def due(self) -> bool:
        return self.clock() - self.last >= LOG_SECONDS

    def printed(self) -> None:
        self.last = self.clock()


def progress_from_environment() -> bool:
    """On unless L2BT_PROGRESS is off, 0 or no: what the command line sets once."""
    return os.environ.get("L2BT_PROGRESS", "on").lower() not in OFF_VALUES


LINES = LineClock()  # one clock for the whole process
_enabled = [progress_from_environment()]


def set_progress(enabled: bool) -> None:
    """Show progress of long work in this process (True) or not."""
    _enabled[0] = enabled


def progress_enabled() -> bool:
    return _enabled[0]


def tell_estimate(what: str, done: int, total: int, seconds: float) -> None:
    """After a long step's first batch, one line on how long all of it will take
    (`l2bt.plan.estimate_line`); nothing with progress off or for a step estimated
    under LOG_SECONDS in all."""
    from l2bt.plan import estimate_line

    if progress_enabled() and done < total and seconds * total >= LOG_SECONDS * max(done, 1):
        sys.stderr.write(estimate_line(what, done, total, seconds) + "\n")
        sys.stderr.flush()


class LogLines:
    """The part of tqdm's interface l2bt uses, printing whole lines as the module says."""

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        total: float | None = None,
        desc: str = "",
        unit: str = "it",
        enabled: bool = True,
        **_: Any,
    ) -> None:
        self.iterable = iterable
        self.total = total if total is not None or iterable is None else _length(iterable)
        self.desc, self.unit, self.enabled = desc, unit, enabled
        self.n: float = 0
        self.postfix = ""
        self.started = LINES.clock()
        self.printed = False

    def update(self, n: float = 1) -> None:
        self.n += n
        if self.enabled and LINES.due():
            self._print()

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, **values: Any) -> None:
        values = {**(ordered_dict or {}), **values}
        values.pop("refresh", None)
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if self.printed:
            self._print()

    def _print(self) -> None:
        done = f"{self.n:g}" + (f"/{self.total:g}" if self.total else "")
        share = f" ({100 * self.n / self.total:.0f} %)" if self.total else ""
        elapsed = LINES.clock() - self.started
        line = f"{self.desc}: {done} {self.unit}{share}, {elapsed:.0f} s"
        sys.stderr.write(line + (f", {self.postfix}" if self.postfix else "") + "\n")
        sys.stderr.flush()
        LINES.printed()
        self.printed = True

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LogLines:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


def _length(iterable: Iterable[Any]) -> float | None:
    try:
        return float(len(iterable))  # type: ignore[arg-type]
    except TypeError:
        return None


def progress_bar(iterable: Iterable[Any] | None = None, **options: Any) -> Any:
    """A tqdm bar over `iterable` (or updated by hand, with `total=`) on a terminal, else
    `LogLines`, when progress is on in this process; `options` are tqdm's (`total`,
    `desc`, `unit`, …)."""
    enabled = progress_enabled()
    if enabled and sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(iterable, **options)
    return LogLines(iterable, enabled=enabled, **options)
