"""Errors a request can end in: a status code and one plain line for the client."""

from __future__ import annotations

MAX_MESSAGE_CHARS = 400


def one_line(text: str) -> str:
    """`text` on one line (whitespace runs folded to one space), at most 400 characters."""
    folded = " ".join(text.split())
    if len(folded) > MAX_MESSAGE_CHARS:
        return folded[:MAX_MESSAGE_CHARS - 1] + "…"
    return folded


def describe_exception(error: BaseException) -> str:
    """`Type: message` on one line, for errors whose class tells the reader something."""
    message = str(error)
    return one_line(f"{type(error).__name__}: {message}" if message else type(error).__name__)


class RequestError(Exception):
    """A request that cannot be answered with a prediction: sent as `{"error": message}`."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = one_line(message)
        super().__init__(self.message)
