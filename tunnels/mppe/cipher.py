"""MPPE encryption and decryption (RFC 3078), stateless and stateful.

The 2-octet header holds A (flushed, 0x8000), D (encrypted, 0x1000) and a 12-bit coherency
count. Stateless: the key changes before every packet and every packet is flushed. Stateful:
one RC4 stream runs across packets, the key changes on "flag" packets (count & 0xFF == 0xFF)
and when a CCP Reset-Request asked for a flushed packet; a receiver that sees a gap discards
until the next flushed packet and asks for one with a Reset-Request (§8.2). The counting
conventions follow practice (Linux ppp_mppe, Windows): the first packet has count 0 and has
already been through one key change.

The per-packet work is one call into `keys` (stream.py: the compiled `_fastmppe.State`, or its
pure-Python twin): `encrypt`, and `decrypt_next` for the in-order packet. What is left here is
what is rare and where the RFC's decisions are: gaps, the stateless reorder window, stateful
discarding and resynchronisation, malformed headers; they work on the same state.
"""

from __future__ import annotations

from tunnels.errors import LocalProtocolError, RemoteProtocolError, WireAnswer
from tunnels.mppe.keys import key_length
from tunnels.mppe.stream import ACCEL, ENCRYPTED, FLUSHED, new_state

__all__ = ["ACCEL", "MPPEDecryptor", "MPPEEncryptor"]

COUNT_SPACE = 0x1000
RESET_REQUEST = WireAnswer("ccp-reset-request")
REORDER_WINDOW = 64  # stateless: how far back a reordered packet may still be decrypted


class _State:
    """The keys and stream live in `keys` (stream.py: compiled when ACCEL); count,
    session_key and key_changes are theirs, so the slow paths below and the one-call fast
    paths never disagree."""

    def __init__(self, start_key: bytes, key_bits: int, stateless: bool):
        if len(start_key) < key_length(key_bits):
            raise LocalProtocolError(f"{len(start_key)}-octet start key for {key_bits}-bit MPPE")
        self.start_key = start_key
        self.key_bits = key_bits
        self.stateless = stateless
        self.keys = new_state(start_key, key_bits, stateless)

    @property
    def count(self) -> int:
        return self.keys.count  # type: ignore[no-any-return]

    @count.setter
    def count(self, value: int) -> None:
        self.keys.count = value

    @property
    def session_key(self) -> bytes:
        return self.keys.session_key  # type: ignore[no-any-return]

    @property
    def key_changes(self) -> int:
        return self.keys.key_changes  # type: ignore[no-any-return]

    def change_key(self) -> None:
        """RFC 3078 §7.3 key change, and the stream re-keyed with the new key."""
        self.keys.change_key()


class MPPEEncryptor(_State):
    # RFC 3078 §3.1 would flush the first stateful packet. Like Linux ppp_mppe (and Windows)
    # we don't: receivers change key on every flushed packet, so a lost flushed first packet
    # would leave the two ends one key change apart for good (a later Reset-Request cannot
    # repair that). Stateless packets are all flushed anyway.

    def encrypt(self, payload: bytes, protocol: bytes = b"", head: bytes = b"") -> bytes:
        """`head` and the information field of a PPP frame with protocol 0x00FD, which
        encrypts `protocol + payload` (the protocol field apart, so the data path's frame is
        built without concatenating the packet first)."""
        return self.keys.encrypt(payload, protocol, head)  # type: ignore[no-any-return]

    def reset(self) -> None:
        """A CCP Reset-Request arrived: the next packet changes key and is flushed. Several
        requests before that packet still mean one change (the peer counts packets, not
        requests)."""
        self.keys.flush_next = True


class MPPEDecryptor(_State):
    def __init__(self, start_key: bytes, key_bits: int, stateless: bool):
        super().__init__(start_key, key_bits, stateless)
        self.discarding = False
        self.counters = {"decrypted": 0, "late": 0, "lost": 0, "discarded": 0, "reordered": 0}
        # Stateless only: session keys of counts skipped over, so a packet that arrives after
        # a later one (GRE reorders) still decrypts; each key is usable once (no replay).
        self._skipped: dict[int, bytes] = {}

    def decrypt(self, info: bytes) -> bytes:
        """Protocol field (two octets, PFC undone) and payload, or RemoteProtocolError whose
        wire answer says whether to send a CCP Reset-Request."""
        if not self.discarding:  # the in-order case, one call (stream.py)
            plain = self.keys.decrypt_next(info)
            if plain is not None:
                if self._skipped:
                    self._forget_skipped(self.keys.count)
                self.counters["decrypted"] += 1
                return plain  # type: ignore[no-any-return]
        if len(info) < 3:
            raise RemoteProtocolError(f"MPPE packet of {len(info)} octets")
        header = int.from_bytes(info[:2], "big")
        count = header & 0x0FFF
        flushed = bool(header & FLUSHED)
        if not header & ENCRYPTED or (header & 0x6000):
            raise RemoteProtocolError("MPPE packet without the D bit, or compressed (MPPC)")
        if self.stateless:
            self._stateless_sync(count, flushed)
        else:
            self._stateful_sync(count, flushed)
        plain = self.keys.update(info[2:])
        self.counters["decrypted"] += 1
        return b"\x00" + plain if plain[0] & 1 else plain

    def _stateless_sync(self, count: int, flushed: bool) -> None:
        """RFC 3078 §8.1: one key change per packet sent. A gap means the keys of the missing
        counts are computed on the way and kept for a while (REORDER_WINDOW) in case those
        packets were only reordered; older, duplicate or unflushed packets are dropped."""
        if not flushed:
            self.counters["late"] += 1
            raise RemoteProtocolError(f"MPPE count {count}: stateless packet without A bit")
        gap = (count - self.count) % COUNT_SPACE
        if gap == 0 or gap > COUNT_SPACE // 2:
            key = self._skipped.pop(count, None)
            if key is None:
                self.counters["late"] += 1
                raise RemoteProtocolError(f"MPPE count {count} late or repeated (at {self.count})")
            self.counters["reordered"] += 1
            self.counters["lost"] -= 1
            self.keys.rekey(key)  # this packet only; the chain head stays put
            return
        self.counters["lost"] += gap - 1
        for step in range(gap):
            key = self.keys.next_key()
            if step < gap - 1 and gap - 1 - step <= REORDER_WINDOW:
                self._skipped[(self.count + 1 + step) % COUNT_SPACE] = key
        self.keys.rekey(key)
        self.count = count
        if self._skipped:
            self._forget_skipped(count)

    def _forget_skipped(self, count: int) -> None:
        """Keys of skipped counts more than REORDER_WINDOW behind `count` are dropped."""
        self._skipped = {c: k for c, k in self._skipped.items()
                         if (count - c) % COUNT_SPACE <= REORDER_WINDOW}

    def _stateful_sync(self, count: int, flushed: bool) -> None:
        """RFC 3078 §8.2: a gap breaks the RC4 stream; discard until a flushed packet."""
        if (count & 0xFF) == 0xFF and not flushed:
            raise RemoteProtocolError("MPPE flag packet without the flushed bit")
        if not self.discarding:
            expected = (self.count + 1) % COUNT_SPACE
            self.count = expected  # the count we were due, as the flag-packet tally needs
            if count != expected:
                self.discarding = True
                self.counters["lost"] += (count - expected) % COUNT_SPACE
                raise RemoteProtocolError(f"MPPE count {count}, expected {expected}",
                                          RESET_REQUEST)
        else:
            if not flushed:
                self.counters["discarded"] += 1
                raise RemoteProtocolError("MPPE: discarding until a flushed packet")
            while (count & ~0xFF) != (self.count & ~0xFF):  # missed flag packets
                self.change_key()
                self.count = (self.count + 256) % COUNT_SPACE
            self.discarding = False
            self.count = count
        if flushed:
            self.change_key()
