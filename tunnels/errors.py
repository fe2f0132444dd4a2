"""Protocol errors that carry the wire answer.

`RemoteProtocolError` is the peer's fault (malformed or out-of-state input); `LocalProtocolError`
is our caller's (an API call that makes no sense in this state). Each carries `wire_answer`: what
the protocol says to send back (a PPP Code-Reject, a PPTP Stop-Control-Connection with a result
code, an L2TP StopCCN, ...) or None for a silent discard. The runtime never turns peer data into
a traceback: it sends the answer, counts the drop and goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class WireAnswer:
    """What to send in reply to bad input, as a layer-specific description.

    `kind` names the answer (e.g. "code-reject", "protocol-reject", "stop-ccn", "discard") and
    `detail` holds what the layer needs to build it (result code, rejected bytes, ...).
    """

    kind: str
    detail: Any = None


DISCARD = WireAnswer("discard")


class ProtocolError(Exception):
    def __init__(self, message: str, wire_answer: WireAnswer | None = DISCARD):
        super().__init__(message)
        self.wire_answer = wire_answer


class RemoteProtocolError(ProtocolError):
    """The peer sent something malformed or out of state."""


class LocalProtocolError(ProtocolError):
    """Our caller asked for something impossible in the current state."""


class Truncated(RemoteProtocolError):
    """A field ran past the end of the received bytes (or past its enclosing length)."""
