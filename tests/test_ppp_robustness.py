"""Whatever the peer sends, the engine answers or discards it and never raises; and the PPP
core stays sans-I/O."""

from __future__ import annotations

import ast
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_ppp_engine import client, connect, server
from tunnels.ppp.auth.base import AuthMethod
from tunnels.ppp.config import EncryptionLevel
from tunnels.ppp.framing import build_frame
from tunnels.ppp.packets import ControlPacket, Option, encode_options

PROTOCOLS = [0xC021, 0x8021, 0x80FD, 0xC023, 0xC223, 0xC227, 0x00FD, 0x0021, 0x8057, 0x002B]
option = st.builds(Option, st.sampled_from([0, 1, 2, 3, 4, 5, 7, 8, 13, 18, 129, 130, 131, 132,
                                            255]), st.binary(max_size=8))
packet = st.builds(lambda proto, code, ident, opts, raw: build_frame(
    proto, ControlPacket(code, ident, encode_options(opts) if code <= 4 else raw).encode()),
    st.sampled_from(PROTOCOLS), st.integers(0, 16), st.integers(0, 255),
    st.lists(option, max_size=5), st.binary(max_size=24))


def _engines():
    s = server((AuthMethod.MSCHAPV2,), encryption=EncryptionLevel.OPTIONAL)
    c = client((AuthMethod.MSCHAPV2,), encryption=EncryptionLevel.OPTIONAL)
    return s, c


@settings(max_examples=150, deadline=None)
@given(st.lists(packet, min_size=1, max_size=12), st.booleans())
def test_structured_garbage_in_any_phase_never_raises(frames, opened):
    s, c = _engines()
    now = 0.0
    if opened:
        now = connect(s, c).now
    else:
        s.open(0.0)
    for frame in frames:
        s.receive_frame(frame, now)
        s.frames_to_send()
        while s.next_event() is not None:
            pass
        timer = s.get_timer()
        if timer is not None:
            now = timer
            s.handle_timer(now)
    assert isinstance(s.status(), dict)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=64), st.sampled_from(PROTOCOLS))
def test_any_information_field_on_any_protocol_never_raises(info, protocol):
    s, c = _engines()
    pair = connect(s, c)
    s.receive_frame(build_frame(protocol, info), pair.now)
    c.receive_frame(build_frame(protocol, info), pair.now)
    s.frames_to_send()
    c.frames_to_send()


FORBIDDEN = {"socket", "asyncio", "time", "subprocess", "threading", "select", "selectors"}


def test_ppp_core_is_sans_io():
    root = Path(__file__).resolve().parent.parent / "tunnels" / "ppp"
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id == "os":
                assert node.attr == "urandom", f"{path.name} uses os.{node.attr}"
