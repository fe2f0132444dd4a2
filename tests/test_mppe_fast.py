"""The compiled MPPE state (tunnels/mppe/_fastmppe.c) against its pure-Python twin
(stream.PyState): the same bytes, the same decisions on loss, reordering and malformed input,
and the compiled one actually in use here (CI and the README's set-up build it)."""

from __future__ import annotations

import json
import random as _random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.accel import require_compiled
from tunnels.errors import RemoteProtocolError
from tunnels.mppe import keys, stream
from tunnels.mppe.cipher import MPPEDecryptor, MPPEEncryptor
from tunnels.mppe.stream import PyState

try:
    from tunnels.mppe import _fastmppe
except ImportError:  # test_compiled_path_is_in_use says why; the pairs below skip
    _fastmppe = None

needs_c = pytest.mark.skipif(_fastmppe is None, reason="tunnels/mppe/_fastmppe.c not built")
V = json.loads((Path(__file__).parent / "data" / "rfc3079_mppe_keys.json").read_text())
BITS = [40, 56, 128]
MODES = pytest.mark.parametrize("stateless", [True, False], ids=["stateless", "stateful"])
KEY = bytes(range(16))


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def payload(i: int) -> bytes:
    return b"\x00\x21" + i.to_bytes(4, "big") * (1 + i % 40)


def pair(cls, start: bytes, bits: int, stateless: bool):
    """The cipher class twice: on the compiled state, and on PyState."""
    c, py = cls(start, bits, stateless), cls(start, bits, stateless)
    c.keys = _fastmppe.State(start, bits, stateless)
    py.keys = PyState(start, bits, stateless)
    return c, py


def test_compiled_path_is_in_use():
    require_compiled(_fastmppe, "tunnels/mppe/_fastmppe.c", "tunnels.mppe._fastmppe")
    assert stream.ACCEL
    assert type(MPPEEncryptor(KEY, 128, True).keys) is _fastmppe.State


@needs_c
@pytest.mark.parametrize("bits, section, key, test", [
    (40, "mschapv2_3_5_1_40bit", "SendSessionKey40", "rc4_SendSessionKey40_test_message"),
    (56, "mschapv2_3_5_2_56bit", "SendSessionKey56", "rc4_test_message_computed"),
    (128, "mschapv2_3_5_3_128bit", "SendSessionKey128", "rc4_SendSessionKey128_test_message"),
])
def test_rfc3079_vectors_on_the_compiled_state(bits, section, key, test):
    start = h(V[section][f"SendStartKey{bits}"])
    state = _fastmppe.State(start, bits, True)
    assert state.session_key == h(V[section][key])
    assert state.update(b"test message") == h(V[section][test])
    assert _fastmppe.rc4(state.session_key, b"test message") == h(V[section][test])


@needs_c
@pytest.mark.parametrize("bits, chain", [(128, "server_send_session_key128_chain"),
                                         (40, "server_send_session_key40_chain")])
def test_key_change_chain_of_the_collection(bits, chain):
    start = h(V[f"mschapv2_3_5_{3 if bits == 128 else 1}_{bits}bit"][f"SendStartKey{bits}"])
    state = _fastmppe.State(start, bits, True)
    for expected in V["derived_not_published"][chain]:
        assert state.session_key == h(expected)
        assert state.next_key() == keys.next_session_key(start, h(expected), bits)
    assert state.key_changes == len(V["derived_not_published"][chain])


@needs_c
@pytest.mark.parametrize("bits", BITS)
@MODES
def test_same_bytes_through_flags_and_wraps_and_each_decrypts_the_other(bits, stateless):
    start = bytes(_random.Random(bits).randbytes(16))
    (ce, pe), (cd, pd) = pair(MPPEEncryptor, start, bits, stateless), \
        pair(MPPEDecryptor, start, bits, stateless)
    for i in range(4500):  # past the 256-packet flag packets and the 4096 count wrap
        if i in (700, 701, 2000):
            ce.reset(), pe.reset()  # Reset-Requests: a flushed packet when stateful
        a, b = ce.encrypt(payload(i)), pe.encrypt(payload(i))
        assert a == b, i
        assert cd.decrypt(b) == pd.decrypt(a) == payload(i)
    assert ce.key_changes == pe.key_changes == cd.key_changes == pd.key_changes
    assert ce.session_key == pe.session_key and ce.count == pe.count == 4499 % 4096


@needs_c
@MODES
def test_frame_building_arguments_match(stateless):
    c, py = _fastmppe.State(KEY, 128, stateless), PyState(KEY, 128, stateless)
    for i in range(300):
        args = (bytes([i & 0xFF]) * i, b"\x00\x21", b"\xff\x03\x00\xfd")
        assert c.encrypt(*args) == py.encrypt(*args)
        assert c.encrypt(bytearray(args[0]), args[1]) == py.encrypt(args[0], args[1])
        assert c.encrypt(memoryview(args[0])) == py.encrypt(args[0])


def _outcome(dec: MPPEDecryptor, packet: bytes):
    try:
        return dec.decrypt(packet)
    except RemoteProtocolError as exc:
        return ("error", exc.wire_answer and exc.wire_answer.kind)


def _same_state(c: MPPEDecryptor, py: MPPEDecryptor) -> None:
    assert (c.count, c.session_key, c.key_changes, c.discarding, c.counters, c._skipped) == \
        (py.count, py.session_key, py.key_changes, py.discarding, py.counters, py._skipped)


@needs_c
@pytest.mark.parametrize("bits", BITS)
@MODES
@pytest.mark.parametrize("seed", range(4))
def test_loss_reordering_and_duplicates_decided_alike(bits, stateless, seed):
    enc = MPPEEncryptor(KEY, bits, stateless)
    r = _random.Random(seed)
    packets = []
    for i in range(1200):
        if not stateless and i % 97 == 0:
            enc.reset()  # what the receiver's Reset-Requests would bring
        packets.append(enc.encrypt(payload(i)))
    arrivals = []
    for p in packets:  # loss, duplicates, and packets held back a few places
        if r.random() < 0.15:
            continue
        arrivals.insert(max(0, len(arrivals) - r.choice([0, 0, 0, 1, 3, 70])), p)
        if r.random() < 0.05:
            arrivals.append(p)
    c, py = pair(MPPEDecryptor, KEY, bits, stateless)
    for p in arrivals:
        assert _outcome(c, p) == _outcome(py, p)
        _same_state(c, py)
    assert c.counters["decrypted"] > (200 if stateless else 10)  # stateful: until a flush


@needs_c
@MODES
@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=12))
def test_malformed_and_short_input_gives_the_same_counted_outcome(stateless, junk):
    c, py = pair(MPPEDecryptor, KEY, 128, stateless)
    enc = MPPEEncryptor(KEY, 128, stateless)
    for data in junk:
        assert _outcome(c, data) == _outcome(py, data)
        _same_state(c, py)
        good = enc.encrypt(b"\x00\x21ok")  # and the session goes on alike afterwards
        assert _outcome(c, good) == _outcome(py, good)
        _same_state(c, py)


@needs_c
@MODES
@given(st.binary(max_size=3000), st.integers(0, 4095))
def test_decrypt_next_declines_without_changing_anything(stateless, data, count):
    """None from decrypt_next must leave the state as it was: the Python slow path then
    starts from it."""
    state = _fastmppe.State(KEY, 56, stateless)
    state.count = count
    before = (state.count, state.session_key, state.key_changes)
    expected = PyState(KEY, 56, stateless)
    expected.count = count
    result = state.decrypt_next(data)
    assert result == expected.decrypt_next(data)
    if result is None:
        assert (state.count, state.session_key, state.key_changes) == before


@needs_c
def test_attributes_are_checked():
    state = _fastmppe.State(KEY, 40, True)
    with pytest.raises(ValueError):
        _fastmppe.State(KEY, 64, True)
    with pytest.raises(ValueError):
        _fastmppe.State(bytes(7), 56, True)
    with pytest.raises(ValueError):
        state.count = 4096
    with pytest.raises(ValueError):
        state.session_key = bytes(16)  # 40-bit keys are 8 octets
    with pytest.raises(ValueError):
        state.crypt(b"", b"data")
    with pytest.raises(TypeError):
        state.update("text")
    with pytest.raises(ValueError):  # __init__ never ran: no key schedule over 0 octets
        _fastmppe.State.__new__(_fastmppe.State).decrypt_next(b"\x90\x00xyz")
    state.session_key = bytes(8)
    state.flush_next = True
    assert state.session_key == bytes(8) and state.flush_next and state.key_bits == 40
