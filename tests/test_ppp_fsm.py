"""The RFC 1661 §4 automaton, cell by cell against the RFC's own table, and its counters."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnels.errors import LocalProtocolError
from tunnels.ppp.fsm import TRANSITIONS, Automaton, Event, State, Timers, Verdict
from tunnels.ppp.packets import Code, ControlPacket, Option, encode_options

# RFC 1661 §4.1, copied from the RFC's text. The "r", "x" and "p" suffixes are implementation
# options (restart, crossed connection, passive) that the automaton does not take.
RFC_TABLE = """
      | State
      |    0         1         2         3         4         5
Events| Initial   Starting  Closed    Stopped   Closing   Stopping
------+-----------------------------------------------------------
 Up   |    2     irc,scr/6     -         -         -         -
 Down |    -         -         0       tls/1       0         1
 Open |  tls/1       1     irc,scr/6     3r        5r        5r
 Close|    0       tlf/0       2         2         4         4
  TO+ |    -         -         -         -       str/4     str/5
  TO- |    -         -         -         -       tlf/2     tlf/3
 RCR+ |    -         -       sta/2 irc,scr,sca/8   4         5
 RCR- |    -         -       sta/2 irc,scr,scn/6   4         5
 RCA  |    -         -       sta/2     sta/3       4         5
 RCN  |    -         -       sta/2     sta/3       4         5
 RTR  |    -         -       sta/2     sta/3     sta/4     sta/5
 RTA  |    -         -         2         3       tlf/2     tlf/3
 RUC  |    -         -       scj/2     scj/3     scj/4     scj/5
 RXJ+ |    -         -         2         3         4         5
 RXJ- |    -         -       tlf/2     tlf/3     tlf/2     tlf/3
 RXR  |    -         -         2         3         4         5

      | State
      |    6         7         8           9
Events| Req-Sent  Ack-Rcvd  Ack-Sent    Opened
------+-----------------------------------------
 Up   |    -         -         -           -
 Down |    1         1         1         tld/1
 Open |    6         7         8           9r
 Close|irc,str/4 irc,str/4 irc,str/4 tld,irc,str/4
  TO+ |  scr/6     scr/6     scr/8         -
  TO- |  tlf/3p    tlf/3p    tlf/3p        -
 RCR+ |  sca/8   sca,tlu/9   sca/8   tld,scr,sca/8
 RCR- |  scn/6     scn/7     scn/6   tld,scr,scn/6
 RCA  |  irc/7     scr/6x  irc,tlu/9   tld,scr/6x
 RCN  |irc,scr/6   scr/6x  irc,scr/8   tld,scr/6x
 RTR  |  sta/6     sta/6     sta/6   tld,zrc,sta/5
 RTA  |    6         6         8       tld,scr/6
 RUC  |  scj/6     scj/7     scj/8       scj/9
 RXJ+ |    6         6         8           9
 RXJ- |  tlf/3     tlf/3     tlf/3   tld,irc,str/5
 RXR  |    6         7         8         ser/9
"""


def _rfc_cells() -> dict[tuple[Event, State], tuple[tuple[str, ...], State]]:
    cells = {}
    first_state = 0
    for line in RFC_TABLE.splitlines():
        if "|" not in line:
            continue
        label, _, rest = line.partition("|")
        label = label.strip()
        if label == "":
            if rest.split()[0].isdigit():
                first_state = int(rest.split()[0])
            continue
        if label not in {e.value for e in Event}:
            continue
        for offset, cell in enumerate(rest.split()):
            if cell == "-":
                continue
            actions, _, nxt = cell.rpartition("/")
            cells[(Event(label), State(first_state + offset))] = (
                tuple(a for a in actions.split(",") if a), State(int(nxt.rstrip("rxp"))))
    return cells


RFC = _rfc_cells()


def test_the_table_is_the_rfcs_table():
    assert len(RFC) == 16 * 10 - 40  # 40 cells are "-" (impossible) in the RFC
    assert TRANSITIONS == RFC


class Recorder:
    """Policy and layer in one: records what the automaton does."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.sent: list[ControlPacket] = []

    def request(self) -> list[Option]:
        return [Option(5, b"\x01\x02\x03\x04")]

    def judge(self, options: list[Option]) -> Verdict:
        return Verdict(Code.CONFIGURE_ACK, options)

    def acked(self, options: list[Option]) -> None: ...

    def naked(self, options: list[Option]) -> None: ...

    def rejected(self, options: list[Option]) -> None: ...

    def this_layer_up(self, fsm: Automaton) -> None:
        self.calls.append("tlu")

    def this_layer_down(self, fsm: Automaton) -> None:
        self.calls.append("tld")

    def this_layer_started(self, fsm: Automaton) -> None:
        self.calls.append("tls")

    def this_layer_finished(self, fsm: Automaton) -> None:
        self.calls.append("tlf")

    def send(self, protocol: int, info: bytes) -> None:
        packet = ControlPacket.decode(info)
        self.sent.append(packet)
        self.calls.append(_SENT_ACTION[packet.code])


_SENT_ACTION = {Code.CONFIGURE_REQUEST: "scr", Code.CONFIGURE_ACK: "sca",
                Code.CONFIGURE_NAK: "scn", Code.CONFIGURE_REJECT: "scn",
                Code.TERMINATE_REQUEST: "str", Code.TERMINATE_ACK: "sta",
                Code.CODE_REJECT: "scj"}


def automaton(state: State, timers: Timers | None = None) -> tuple[Automaton, Recorder]:
    rec = Recorder()
    fsm = Automaton("LCP", 0xC021, rec, rec, rec.send, timers or Timers())
    fsm.state = state
    fsm.restart_counter = 99  # a sentinel: irc and zrc must overwrite it
    fsm._last_rcr = ControlPacket(Code.CONFIGURE_REQUEST, 42, b"")
    fsm._last_verdict = Verdict(Code.CONFIGURE_NAK, [Option(1, b"\x05\xdc")])
    fsm._reject = ControlPacket(0x63, 7, b"")
    fsm._last_rtr_id = 17
    return fsm, rec


@pytest.mark.parametrize("event, state", sorted(RFC, key=lambda k: (k[0].name, k[1])),
                         ids=lambda v: getattr(v, "name", str(v)))
def test_each_transition_does_what_the_rfc_cell_says(event, state):
    actions, nxt = RFC[(event, state)]
    timers = Timers(restart=3.0, max_configure=10, max_terminate=2, max_failure=5)
    fsm, rec = automaton(state, timers)
    fsm._fire(event, 1.0)
    assert fsm.state is nxt
    assert rec.calls == [a for a in actions if a not in ("irc", "zrc", "ser")]
    sends = sum(a in ("scr", "str") for a in actions)
    if "irc" in actions:
        full = timers.max_terminate if "str" in actions else timers.max_configure
        assert fsm.restart_counter == full - sends
    elif "zrc" in actions:
        assert fsm.restart_counter == 0 and fsm.get_timer() == 4.0
    else:
        assert fsm.restart_counter == 99 - sends
    if "sta" in actions:
        assert rec.sent[-1].identifier == 17  # Terminate-Ack echoes the request's identifier
    if "sca" in actions or "scn" in actions:
        assert any(p.identifier == 42 for p in rec.sent)


@pytest.mark.parametrize("event, state", [(e, s) for e in Event for s in State
                                          if (e, s) not in RFC])
def test_impossible_cells(event, state):
    """Administrative events in an impossible state are our caller's error; packets there
    (the lower layer is not up) are ignored."""
    fsm, rec = automaton(state)
    if event in (Event.UP, Event.DOWN, Event.OPEN, Event.CLOSE):
        with pytest.raises(LocalProtocolError):
            fsm._fire(event, 0.0)
    else:
        fsm._fire(event, 0.0)
        assert fsm.state is state and rec.calls == []


def drive_to_timeout(fsm: Automaton) -> int:
    requests, now = 0, 0.0
    while fsm.get_timer() is not None:
        now = fsm.get_timer()
        fsm.handle_timer(now)
        requests += 1
    return requests


def test_max_configure_then_this_layer_finished():
    fsm, rec = automaton(State.INITIAL, Timers(restart=2.0, max_configure=4))
    fsm.open(0.0)
    fsm.up(0.0)
    assert rec.calls == ["tls", "scr"] and fsm.get_timer() == 2.0
    drive_to_timeout(fsm)
    assert rec.calls.count("scr") == 4  # exactly Max-Configure requests
    assert rec.calls[-1] == "tlf" and fsm.state is State.STOPPED
    assert "Max-Configure" in fsm.terminate_reason


def test_restart_timer_is_not_running_when_opened_or_closed():
    fsm, rec = automaton(State.ACK_SENT)
    fsm._fire(Event.RCA, 0.0)
    assert fsm.state is State.OPENED and fsm.get_timer() is None


def test_max_terminate_then_finished():
    fsm, rec = automaton(State.OPENED, Timers(restart=1.0, max_terminate=3))
    fsm.close(0.0, "bye")
    drive_to_timeout(fsm)
    assert rec.calls.count("str") == 3 and rec.calls[-1] == "tlf"
    assert fsm.state is State.CLOSED
    assert rec.sent[0].data == b"bye"


def test_max_failure_turns_naks_into_rejects():
    class Naks(Recorder):
        def judge(self, options):
            return Verdict(Code.CONFIGURE_NAK, [Option(1, b"\x05\xdc")])

    rec = Naks()
    fsm = Automaton("LCP", 0xC021, rec, rec, rec.send, Timers(max_failure=3))
    fsm.open(0.0)
    fsm.up(0.0)
    request = ControlPacket(1, 1, encode_options([Option(1, b"\x00\x10")])).encode()
    for _ in range(5):
        fsm.receive(request, 0.0)
    codes = [p.code for p in rec.sent if p.code in (Code.CONFIGURE_NAK, Code.CONFIGURE_REJECT)]
    assert codes == [Code.CONFIGURE_NAK] * 3 + [Code.CONFIGURE_REJECT] * 2


def test_unknown_code_is_code_rejected_with_the_packet():
    fsm, rec = automaton(State.OPENED)
    fsm.receive(bytes.fromhex("63070006abcd"), 0.0)
    assert rec.sent[-1].code == Code.CODE_REJECT
    assert rec.sent[-1].data == bytes.fromhex("63070006abcd")


def test_code_reject_of_an_essential_code_is_rxj_minus():
    fsm, rec = automaton(State.OPENED)
    fsm.receive(ControlPacket(Code.CODE_REJECT, 3, bytes.fromhex("01010004")).encode(), 0.0)
    assert fsm.state is State.STOPPING and rec.calls == ["tld", "str"]
    fsm, rec = automaton(State.OPENED)
    fsm.receive(ControlPacket(Code.CODE_REJECT, 3, bytes.fromhex("0c010004")).encode(), 0.0)
    assert fsm.state is State.OPENED and rec.calls == []


def test_ack_with_a_stale_identifier_is_ignored():
    fsm, rec = automaton(State.INITIAL)
    fsm.open(0.0)
    fsm.up(0.0)
    ours = rec.sent[-1]
    fsm.receive(ControlPacket(Code.CONFIGURE_ACK, ours.identifier + 1, ours.data).encode(), 0.0)
    assert fsm.state is State.REQ_SENT
    fsm.receive(ControlPacket(Code.CONFIGURE_ACK, ours.identifier, ours.data).encode(), 0.0)
    assert fsm.state is State.ACK_RCVD


@given(st.lists(st.sampled_from(list(Event)), max_size=40),
       st.sampled_from(list(State)))
def test_any_event_sequence_keeps_a_valid_state(events, start):
    fsm, rec = automaton(start)
    for event in events:
        try:
            fsm._fire(event, 0.0)
        except LocalProtocolError:
            assert (event, fsm.state) not in TRANSITIONS
        assert isinstance(fsm.state, State)
        timed = fsm.get_timer() is not None
        assert not timed or fsm.state in (State.CLOSING, State.STOPPING, State.REQ_SENT,
                                          State.ACK_RCVD, State.ACK_SENT)


def test_ack_whose_options_differ_from_the_request_is_ignored():
    fsm, rec = automaton(State.INITIAL)
    fsm.open(0.0)
    fsm.up(0.0)
    ours = rec.sent[-1]
    fsm.receive(ControlPacket(Code.CONFIGURE_ACK, ours.identifier, b"\x05\x06\0\0\0\1").encode(),
                0.0)
    assert fsm.state is State.REQ_SENT
