"""Progress of long work, for people.

On a terminal: a tqdm bar. Logged to a file (a service, `make demo > demo.log`): no bar,
but one plain line at most every LOG_SECONDS, the first only once the work has taken that
long, and the last when it ends, so a log shows that a long run is alive and how far it
is without filling up with carriage returns. Turned off (`enabled=False`): nothing.
tqdm is imported on first use, so a command that shows no progress does not pay for it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TextIO

LOG_SECONDS = 30.0


class _Lines:
    """A stream for tqdm that turns its in-place redraws into whole lines."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(
    iterable: Iterable[Any] | None = None, *, enabled: bool = True, **options: Any
) -> Any:
    """A tqdm over `iterable` (or updated by hand, with `total=`) that shows itself as the
    module docstring says; `options` are tqdm's (`total`, `desc`, `unit`, …)."""
    from tqdm.auto import tqdm

    if not enabled:
        return tqdm(iterable, disable=True, **options)
    if sys.stderr.isatty():
        return tqdm(iterable, **options)
    logged = {"mininterval": LOG_SECONDS, "maxinterval": LOG_SECONDS, "delay": LOG_SECONDS}

    class LoggedBar(tqdm):
        """Its postfix is shown with the next line, not printed at once (which would
        break the interval and print short work)."""

        def set_postfix(
            self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any
        ) -> None:
            super().set_postfix(ordered_dict, refresh=False, **kwargs)

    return LoggedBar(
        iterable, file=_Lines(sys.stderr), ascii=True, ncols=100, **{**options, **logged}
    )
