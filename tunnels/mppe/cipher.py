"""MPPE encryption and decryption (RFC 3078), stateless and stateful.

The 2-octet header holds A (flushed, 0x8000), D (encrypted, 0x1000) and a 12-bit coherency
count. Stateless: the key changes before every packet and every packet is flushed. Stateful:
one RC4 stream runs across packets, the key changes on "flag" packets (count & 0xFF == 0xFF)
and when a CCP Reset-Request asked for a flushed packet; a receiver that sees a gap discards
until the next flushed packet and asks for one with a Reset-Request (§8.2). The counting
conventions follow practice (Linux ppp_mppe, Windows): the first packet has count 0 and has
already been through one key change.
"""

from __future__ import annotations

from hashlib import sha1

from tunnels.errors import LocalProtocolError, RemoteProtocolError, WireAnswer

from tunnels.mppe.keys import SHA_PAD1, SHA_PAD2, initial_session_key, key_length, reduce_key
from tunnels.mppe.rc4 import new_reusable, packet_stream, rc4

FLUSHED = 0x8000
ENCRYPTED = 0x1000
COUNT_SPACE = 0x1000
RESET_REQUEST = WireAnswer("ccp-reset-request")
REORDER_WINDOW = 64  # stateless: how far back a reordered packet may still be decrypted
# Stateless packets all carry A and D (RFC 3078 §8.1), so their header is this | count.
_STATELESS = FLUSHED | ENCRYPTED


class _State:
    def __init__(self, start_key: bytes, key_bits: int, stateless: bool):
        if len(start_key) < key_length(key_bits):
            raise LocalProtocolError(f"{len(start_key)}-octet start key for {key_bits}-bit MPPE")
        self.start_key = start_key
        self.key_bits = key_bits
        self.stateless = stateless
        self.session_key = initial_session_key(start_key, key_bits)
        # stateless: one RC4 state re-keyed twice per packet (tunnels/mppe/rc4.py), first for
        # the §7.3 key change, then for the packet itself
        self._reused = new_reusable() if stateless else None
        self.rc4 = self._new_stream(self.session_key)
        self.count = COUNT_SPACE - 1
        self.key_changes = 0

        # keys.next_session_key with its constant parts computed once: stateless MPPE changes
        # key for every packet (tests pair the two)
        self._length = key_length(key_bits)
        self._sha_prefix = start_key[:self._length] + SHA_PAD1

    def _new_stream(self, key: bytes):  # noqa: ANN202 - an RC4 stream (rc4.Stream)
        return packet_stream(self._reused, key)

    def _next_key(self) -> bytes:
        """RFC 3078 §7.3: interim key from SHA-1, RC4-encrypted under itself (then reduced).
        What a key change costs is all here: one SHA-1 and one 8- or 16-octet RC4. Each key
        depends only on the one before, so computing keys ahead would move that work, not
        save it."""
        length = self._length
        interim = sha1(self._sha_prefix + self.session_key[:length] + SHA_PAD2).digest()[:length]
        kc = self._reused
        key = kc.crypt(interim, interim) if kc is not None else rc4(interim, interim)
        self.session_key = key = key if self.key_bits == 128 else reduce_key(key, self.key_bits)
        self.key_changes += 1
        return key

    def change_key(self) -> None:
        self.rc4 = self._new_stream(self._next_key())


class MPPEEncryptor(_State):
    def __init__(self, start_key: bytes, key_bits: int, stateless: bool):
        super().__init__(start_key, key_bits, stateless)
        # RFC 3078 §3.1 would flush the first stateful packet. Like Linux ppp_mppe (and
        # Windows) we don't: receivers change key on every flushed packet, so a lost flushed
        # first packet would leave the two ends one key change apart for good (a later
        # Reset-Request cannot repair that). Stateless packets are all flushed anyway.
        self._flush_next = False

    def encrypt(self, protocol_and_payload: bytes) -> bytes:
        """The information field of a PPP frame with protocol 0x00FD."""
        if self._reused is not None:  # stateless with libcrypto: every packet flushed, re-keyed
            self.count = count = (self.count + 1) & 0x0FFF
            head = (_STATELESS | count).to_bytes(2, "big")
            return head + self._reused.crypt(self._next_key(), protocol_and_payload)
        self.count = (self.count + 1) % COUNT_SPACE
        flushed = self.stateless or (self.count & 0xFF) == 0xFF or self._flush_next
        if flushed:
            self.change_key()
            self._flush_next = False
        header = (FLUSHED if flushed else 0) | ENCRYPTED | self.count
        return header.to_bytes(2, "big") + self.rc4.update(protocol_and_payload)

    def reset(self) -> None:
        """A CCP Reset-Request arrived: the next packet changes key and is flushed. Several
        requests before that packet still mean one change (the peer counts packets, not
        requests)."""
        self._flush_next = True


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
        if len(info) < 3:
            raise RemoteProtocolError(f"MPPE packet of {len(info)} octets")
        header = int.from_bytes(info[:2], "big")
        count = header & 0x0FFF
        reused = self._reused
        if (reused is not None and header & 0xF000 == _STATELESS
                and count == (self.count + 1) & 0x0FFF):
            # Stateless, the next count, A and D set, B and C clear: one key change (§8.1),
            # what _stateless_sync does for a gap of one, without its bookkeeping.
            self.count = count
            key = self._next_key()
            if self._skipped:
                self._forget_skipped(count)
            plain = reused.crypt(key, info[2:])
            self.counters["decrypted"] += 1
            return b"\x00" + plain if plain[0] & 1 else plain
        flushed = bool(header & FLUSHED)
        if not header & ENCRYPTED or (header & 0x6000):
            raise RemoteProtocolError("MPPE packet without the D bit, or compressed (MPPC)")
        if self.stateless:
            self._stateless_sync(count, flushed)
        else:
            self._stateful_sync(count, flushed)
        plain = self.rc4.update(info[2:])
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
            self.rc4 = self._new_stream(key)  # this packet only; the chain head stays put
            return
        self.counters["lost"] += gap - 1
        for step in range(gap):
            key = self._next_key()
            if step < gap - 1 and gap - 1 - step <= REORDER_WINDOW:
                self._skipped[(self.count + 1 + step) % COUNT_SPACE] = key
        self.rc4 = self._new_stream(key)
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
