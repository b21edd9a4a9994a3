"""A request's body: counted, within its deadlines, against a shared budget, dropped at shutdown.

Deadlines (`--body-timeout` T, `--min-body-rate` R): every chunk of the body must come
within T seconds of the previous one (of the headers, for the first), and the whole body
within T + N / R seconds of the headers, N being the Content-Length (for a body without
one, the bytes received so far). A client that stalls is therefore answered 408 at most
T seconds after it stops sending, and one that trickles bytes slowly at most T + N / R
seconds after it started; either way its connection is closed and all it held is freed.

Budget: the bytes of all bodies received (and held until their request ends) count
against `queue_size` × `max_body_bytes`; a chunk that would pass it is answered 503. Bodies
are read before a request asks for a predict slot (`app.py`), so a stalled upload holds
only the bytes it sent, never a slot. Uvicorn itself stops reading a connection whose
unread data passes 64 KiB, so what a stalled client sent but nobody read is bounded too.

Shutdown: `Uploads.close()` makes every body still arriving answer 503 at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import contextmanager

from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from l2bt.serve.errors import RequestError
from l2bt.serve.settings import ServeSettings

SHUTTING_DOWN = "the server is shutting down; retry later"


class Ticket:
    """The bytes one request's body holds against the budget."""

    def __init__(self, uploads: Uploads) -> None:
        self._uploads = uploads
        self.held = 0

    def charge(self, size: int) -> None:
        self._uploads.charge(size)
        self.held += size


class Uploads:
    """The budget of bytes for bodies, and the switch that drops bodies at shutdown.
    Used on the event loop's thread only."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.held = 0
        self.closing = asyncio.Event()

    def charge(self, size: int) -> None:
        if self.held + size > self.budget:
            raise RequestError(
                503,
                f"server busy: request bodies hold {self.held:,} of "
                f"{self.budget:,} bytes (--queue-size x --max-body-mb); "
                "retry later",
                close_connection=True,
            )
        self.held += size

    @contextmanager
    def ticket(self) -> Iterator[Ticket]:
        """A ticket whose bytes are given back when the request ends."""
        ticket = Ticket(self)
        try:
            yield ticket
        finally:
            self.held -= ticket.held

    def close(self) -> None:
        self.closing.set()


class BodyClock:
    """When the next chunk of one body must have arrived (the module's deadlines)."""

    def __init__(self, settings: ServeSettings, declared: int) -> None:
        self.timeout = settings.body_timeout
        self.min_rate = settings.min_body_rate
        self.declared = declared
        self.started = self.last = time.monotonic()

    def seconds_left(self, received: int) -> float:
        whole_body = self.started + self.timeout + max(received, self.declared) / self.min_rate
        return min(self.last + self.timeout, whole_body) - time.monotonic()

    def arrived(self) -> None:
        self.last = time.monotonic()


async def read_image_body(
    request: Request, settings: ServeSettings, uploads: Uploads, ticket: Ticket
) -> bytes:
    """The image file's bytes: multipart field `image`, or the whole raw body."""
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise body_too_large(limit)
    clock = BodyClock(settings, int(declared) if declared.isdigit() else 0)
    chunks = timed_chunks(request.stream(), clock, limit, uploads, ticket)
    if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        return await multipart_image(request.headers, chunks)
    return b"".join([chunk async for chunk in chunks])


def body_too_large(limit: int) -> RequestError:
    return RequestError(
        413,
        f"request body over the limit of {limit:,} bytes (--max-body-mb)",
        close_connection=True,
    )


async def timed_chunks(
    stream: AsyncIterator[bytes], clock: BodyClock, limit: int, uploads: Uploads, ticket: Ticket
) -> AsyncGenerator[bytes, None]:
    """The body's chunks as they arrive, each charged to `ticket`; 413 as soon as they
    pass `limit` bytes, 408 past the clock's deadline, 503 at shutdown."""
    received = 0
    try:
        while (
            chunk := await next_chunk(stream, clock.seconds_left(received), uploads.closing)
        ) is not None:
            received += len(chunk)
            if received > limit:
                raise body_too_large(limit)
            ticket.charge(len(chunk))
            clock.arrived()
            yield chunk
    except ClientDisconnect as e:
        raise RequestError(400, "the client closed the connection before the body ended") from e


async def next_chunk(
    stream: AsyncIterator[bytes], seconds: float, closing: asyncio.Event
) -> bytes | None:
    """The stream's next chunk (None at its end), unless `seconds` pass (408) or
    `closing` is set (503) first."""
    if closing.is_set():
        raise RequestError(503, SHUTTING_DOWN, close_connection=True)
    step = asyncio.ensure_future(anext(stream, None))
    stop = asyncio.ensure_future(closing.wait())
    try:
        done, _ = await asyncio.wait(
            (step, stop), timeout=max(seconds, 0.0), return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        stop.cancel()
        step.cancel()  # no effect once done
    if step in done:
        return step.result()
    if closing.is_set():
        raise RequestError(503, SHUTTING_DOWN, close_connection=True)
    raise RequestError(
        408,
        "the request body stopped arriving (--body-timeout, --min-body-rate); send it again",
        close_connection=True,
    )


async def multipart_image(headers: Headers, chunks: AsyncGenerator[bytes, None]) -> bytes:
    """Field `image` of a multipart body (the file spooled to disk past 1 MiB)."""
    try:
        form = await MultiPartParser(headers, chunks, max_files=1, max_fields=16).parse()
    except MultiPartException as e:
        raise RequestError(400, f"malformed multipart body ({e.message})") from e
    try:
        part = form.get("image")
        if part is None:
            raise RequestError(
                400, "the multipart body has no field 'image' (send the file as image=@FILE)"
            )
        if not isinstance(part, UploadFile):
            raise RequestError(400, "multipart field 'image' is text, not a file")
        return await part.read()
    finally:
        await form.close()
