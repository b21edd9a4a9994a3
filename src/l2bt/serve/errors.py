"""Errors a request can end in: a status code and one plain line for the client."""

from __future__ import annotations

from l2bt.data.image_io import describe_exception as exception_line

MAX_MESSAGE_CHARS = 400


def one_line(text: str) -> str:
    """`text` on one line (whitespace runs folded to one space), at most 400 characters."""
    folded = " ".join(text.split())
    if len(folded) > MAX_MESSAGE_CHARS:
        return folded[: MAX_MESSAGE_CHARS - 1] + "…"
    return folded


def describe_exception(error: BaseException) -> str:
    """`Type: message` on one line, for errors whose class tells the reader something."""
    return one_line(exception_line(error))


class RequestError(Exception):
    """A request that cannot be answered with a prediction: sent as `{"error": message}`."""

    def __init__(self, status: int, message: str, close_connection: bool = False) -> None:
        self.status = status
        self.message = one_line(message)
        self.close_connection = close_connection  # the body was not read to its end
        super().__init__(self.message)
