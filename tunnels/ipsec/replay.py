"""The ESP receiver's anti-replay window (RFC 4303 §3.4.3, 32-bit sequence numbers, no ESN).

Two steps on purpose: `check(seq)` runs before the ICV is verified, so a replayed or ancient
packet costs no HMAC; `update(seq)` runs only after it was verified, "the receive window is
updated only if the integrity verification succeeds" (§3.4.3), so forged sequence numbers
cannot slide the window forward and lock the peer out. The window is a Python int used as a
bitmap: bit i set means `highest - i` was received.
"""

from __future__ import annotations

from tunnels.errors import LocalProtocolError

DEFAULT_WINDOW = 64  # §3.4.3: "a minimum window size of 32 packets MUST be supported", 64 SHOULD
MAX_WINDOW = 1024
MAX_SEQ = 0xFFFFFFFF


class ReplayWindow:
    """Receiver side: duplicates and packets left of the window are rejected; packets right of
    it are accepted and slide the window once authenticated."""

    __slots__ = ("size", "highest", "_bits", "_mask")

    def __init__(self, size: int = DEFAULT_WINDOW):
        if not 32 <= size <= MAX_WINDOW:
            raise LocalProtocolError(f"replay window of {size}: must be 32..{MAX_WINDOW}")
        self.size = size
        self.highest = 0  # no packet yet: seq 0 is never sent (§3.3.3, the first is 1)
        self._bits = 0
        self._mask = (1 << size) - 1

    def check(self, seq: int) -> bool:
        """Whether `seq` may be new: in 1..2^32-1, right of the window, or inside it unseen."""
        if seq <= 0 or seq > MAX_SEQ:
            return False
        if seq > self.highest:
            return True
        offset = self.highest - seq
        return offset < self.size and not (self._bits >> offset) & 1

    def update(self, seq: int) -> None:
        """Mark an authenticated `seq` received (the caller checked it first)."""
        shift = seq - self.highest
        if shift >= self.size:  # far ahead: nothing of the old window survives (and no
            self._bits = 1      # 2^32-bit shift for a jump across the sequence space)
            self.highest = seq
        elif shift > 0:
            self._bits = ((self._bits << shift) | 1) & self._mask
            self.highest = seq
        else:
            self._bits |= 1 << (self.highest - seq)

    def seen(self, seq: int) -> bool:
        """Whether `seq` was received and is still inside the window (for tests and reports)."""
        offset = self.highest - seq
        return 0 <= offset < self.size and bool((self._bits >> offset) & 1)
