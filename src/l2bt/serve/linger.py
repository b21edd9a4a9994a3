"""413 first, then close: a body refused as too large is read and dropped before the
connection closes, so that the client reads the answer.

A server that closes a connection while the client's body is still arriving makes the
kernel reset it (RST), and a client busy sending loses the answer already on its way: it
sees the connection drop without a status line. So when a 413 answer closes the
connection before its request's body was read to its end, the answer's last byte is
held back while the rest of the body is received and discarded (nothing kept), for at
most `seconds` in all; then the answer ends and the connection closes. A client that
stops sending, or sends forever, holds the connection `seconds` at most.
"""

from __future__ import annotations

import asyncio
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class LingerOn413:
    """ASGI middleware: see the module docstring."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = {"body_read": False, "lingering": False}

        async def watched_receive() -> Message:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                state["body_read"] = True
            return message

        async def lingering_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["lingering"] = message["status"] == 413 and _closes(message)
            last = message["type"] == "http.response.body" and not message.get("more_body")
            if last and state["lingering"] and not state["body_read"]:
                await send({**message, "more_body": True})
                await self._drain(receive)
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app(scope, watched_receive, lingering_send)

    async def _drain(self, receive: Receive) -> None:
        """Receive and drop the rest of the body (see the module docstring)."""
        deadline = time.monotonic() + self.seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = await asyncio.wait_for(receive(), left)
            except TimeoutError:
                return
            if message["type"] != "http.request" or not message.get("more_body", False):
                return


def _closes(start: Message) -> bool:
    return any(k.lower() == b"connection" and v.lower() == b"close" for k, v in start["headers"])
