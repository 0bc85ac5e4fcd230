"""Reading a connection's RESP replies straight off its socket (hiredis)."""

from __future__ import annotations

from typing import Any

import hiredis
import redis
from redis.exceptions import InvalidResponse, NoScriptError, ResponseError


class ReplyReader:
    """A connection's replies read straight off its socket into a hiredis reader: one
    `gets` a reply instead of redis-py's read_response, which costs a few microseconds
    each. Only for a connection whose replies are all read here (or none pending when
    redis-py reads from it)."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self._reader = hiredis.Reader(protocolError=InvalidResponse, replyError=_reply_error)

    def read(self, count: int, *, raise_errors: bool = True) -> list[Any]:
        """The next `count` replies. A reply error (e.g. NOSCRIPT) is raised, the later
        replies left unread; with raise_errors=False it takes its place in the list."""
        replies: list[Any] = []
        gets = self._reader.gets
        while len(replies) < count:
            reply = gets()
            if reply is False:
                self._receive()
            elif raise_errors and isinstance(reply, ResponseError):
                raise reply
            else:
                replies.append(reply)
        return replies

    def _receive(self) -> None:
        sock = self.connection._sock
        if sock is None:
            raise redis.ConnectionError("connection closed")
        try:
            data = sock.recv(_RECEIVE_BYTES)
        except TimeoutError as exc:
            raise redis.TimeoutError("timeout reading from redis") from exc
        except OSError as exc:
            raise redis.ConnectionError(f"error reading from redis: {exc}") from exc
        if not data:
            raise redis.ConnectionError("connection closed by redis")
        self._reader.feed(data)


_RECEIVE_BYTES = 1 << 18


def _reply_error(message: str) -> ResponseError:
    if message.startswith("NOSCRIPT "):
        return NoScriptError(message[len("NOSCRIPT ") :])
    return ResponseError(message)
