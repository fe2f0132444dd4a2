"""RADIUS against a real FreeRADIUS (Debian's 3.2, `testbed.freeradius`), only inside a network
namespace this test creates (`unshare --net`; a veth end holds the lab's addresses, see
tests/test_runtime_netns.py). Through the asyncio runtime (`tunnels.runtime.radius`) and
`tunnels.radius.access`: PAP, CHAP, EAP-MD5, MS-CHAP v1 and v2 are accepted with the reply items
applied (Framed-IP-Address, Session-Timeout, Idle-Timeout, Class, Filter-Id), MS-CHAP v2's S= is
the one RFC 2759 computes and its MPPE keys (and MS-CHAP v1's 128-bit one: FreeRADIUS sends no
LM key) equal what RFC 3079 derives from the password; a
wrong password gets 691 from MS-CHAP-Error; the Accountant's Start, Interim-Update and Stop land
in FreeRADIUS's detail file with our counters (Gigawords too) and the Class echoed; with the
first server's address silent the second instance answers. EAP relayed (RFC 3579) to its eap
module: EAP-MD5 over Access-Challenge with State, accepted with the right password and
rejected with a wrong one, FreeRADIUS's EAP packets reaching the peer unchanged.

Our client requires a Message-Authenticator in every Access-Accept/Reject, which stock 3.2.1
sends only with EAP, so the helper's site adds it to every reply as 3.2.5 does."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from testbed.freeradius import (
    FreeRadius,
    FreeRadiusSpec,
    RadiusClientSpec,
    RadiusUser,
    skip_reason,
    values,
)
from tests.test_runtime_netns import Namespace, namespace_skip_reason
from tunnels.radius.access import NO_LM_KEY

pytestmark = pytest.mark.netns
SECRET = "vpnlab-secret"
A, B, NAS_ADDRESS, SILENT = "10.77.0.1", "10.77.0.2", "10.77.0.3", "10.77.0.9"
USERS = (
    RadiusUser("bob", "hello", (("Framed-IP-Address", "10.9.0.7"), ("Session-Timeout", 3600),
                                ("Idle-Timeout", 600), ("Class", "gold"),
                                ("Class", "team-a"), ("Filter-Id", "vpn-users"))),
    RadiusUser("alice", "s3cret-2"),
)


def _skip() -> str | None:
    return skip_reason() or namespace_skip_reason()


@pytest.fixture
def radius_lab(tmp_path: Path):
    """A namespace with A, B and the NAS's address on one end of a veth pair whose other end
    has no address (SILENT's ARP goes unanswered: silence), FreeRADIUS on A and a second
    instance on B."""
    reason = _skip()
    if reason:
        pytest.skip(reason)
    ns = Namespace()
    servers: list[FreeRadius] = []
    try:
        ns.run(["ip", "link", "add", "rad0", "type", "veth", "peer", "name", "rad1"])
        for address in (A, B, NAS_ADDRESS):
            ns.run(["ip", "addr", "add", f"{address}/24", "dev", "rad0"])
        for dev in ("rad0", "rad1"):
            ns.run(["ip", "link", "set", dev, "up"])
        for address in (A, B):
            spec = FreeRadiusSpec(address=address, users=USERS,
                                  clients=(RadiusClientSpec("10.77.0.0/24", SECRET),))
            servers.append(FreeRadius(spec, tmp_path / f"radius-{address}", ns.pid,
                                      node=f"radius-{address}"))
            servers[-1].start()
        yield ns, servers[0], servers[1]
    finally:
        for server in reversed(servers):
            server.stop()
        ns.close()


DRIVER = """
import asyncio, hashlib, json, os, time
from tunnels.accounting import Accountant, AccountingSession, Counters, SessionIds
from tunnels.ppp.auth import mscrypto
from tunnels.ppp.auth.base import AuthMethod, Credentials
from tunnels.ppp.auth.chap import MSCHAPv1Response, MSCHAPv2Response
from tunnels.radius.access import (NasInfo, access_request, groups_from, mppe_start_keys,
                                   verdict_from)
from tunnels.radius.attributes import AcctAuthentic, TunnelType
from tunnels.radius.client import RadiusClient
from tunnels.runtime.radius import RadiusRuntime

SECRET, A, B, NAS_ADDRESS, SILENT = %(args)r
NAS = NasInfo("vpnlab", NAS_ADDRESS, 7, TunnelType.PPTP, "198.51.100.20", NAS_ADDRESS)

def credentials(method, user, password):
    if method is AuthMethod.PAP:
        return Credentials(method, user, password=password.encode())
    ach = os.urandom(16)
    if method in (AuthMethod.CHAP, AuthMethod.EAP_MD5):
        return Credentials(method, user, 5, ach,
                           hashlib.md5(bytes([5]) + password.encode() + ach).digest())
    if method is AuthMethod.MSCHAP:
        ch = ach[:8]
        nt = mscrypto.nt_challenge_response_v1(ch, password)
        return Credentials(method, user, 6, ch, MSCHAPv1Response(bytes(24), nt).encode())
    pch = os.urandom(16)
    nt = mscrypto.generate_nt_response(ach, pch, user, password)
    return Credentials(method, user, 9, ach, MSCHAPv2Response(pch, nt).encode())

def summary(verdict, event, creds, rtt):
    keys = {}
    if verdict.success and (verdict.mppe_keys or verdict.mppe_material):
        for bits in (40, 56, 128):
            try:
                keys[bits] = [k.hex() for k in mppe_start_keys(verdict, bits)]
            except Exception as exc:
                keys[bits] = str(exc)
    auth = verdict.authorization
    return {"event": type(event).__name__, "server": list(getattr(event, "server", [])),
            "success": verdict.success, "code": verdict.error_code, "message": verdict.message,
            "s": verdict.authenticator_response, "keys": keys,
            "peer_address": auth.peer_address, "session_timeout": auth.session_timeout,
            "idle_timeout": auth.idle_timeout, "class": [c.hex() for c in auth.class_],
            "encryption": auth.encryption, "groups": list(groups_from(event))
                if hasattr(event, "attributes") else [],
            "challenge": creds.challenge.hex(), "response": creds.response.hex(), "rtt": rtt}

async def ask(rt, creds):
    done = asyncio.get_running_loop().create_future()
    start = time.perf_counter()
    rt.submit_access(access_request(creds, NAS), done.set_result)
    event = await asyncio.wait_for(done, 20)
    return summary(verdict_from(event, creds), event, creds, time.perf_counter() - start)

async def main():
    loop = asyncio.get_running_loop()
    out = {}
    rt = RadiusRuntime(loop, RadiusClient([(A, 1812, SECRET)], timeout=1.0, retries=3),
                       bind_address=NAS_ADDRESS)
    for method in AuthMethod:
        out[method.value] = await ask(rt, credentials(method, "bob", "hello"))
    out["alice-pap"] = await ask(rt, credentials(AuthMethod.PAP, "alice", "s3cret-2"))
    out["mschapv2-bad"] = await ask(rt, credentials(AuthMethod.MSCHAPV2, "bob", "wrong"))
    out["pap-bad"] = await ask(rt, credentials(AuthMethod.PAP, "bob", "wrong"))
    rtts = []
    for _ in range(20):  # latency of one Access round trip (MS-CHAP v2, the slowest)
        rtts.append((await ask(rt, credentials(AuthMethod.MSCHAPV2, "bob", "hello")))["rtt"])
    out["rtts"] = rtts
    # a callback that raises is counted, never propagated
    failing = loop.create_future()
    def boom(event):
        failing.set_result(event)
        raise RuntimeError("callback bug")
    rt.submit_access(access_request(credentials(AuthMethod.PAP, "bob", "hello"), NAS), boom)
    await asyncio.wait_for(failing, 20)

    # accounting: Start, an interim from the Accountant's timer, Stop past 2^32 octets
    v2 = out["mschapv2"]
    counts = {"n": Counters(1234, 5678, 12, 34)}
    accountant = Accountant(["radius", "local"], lambda sid: counts["n"],
                            nas_identifier="vpnlab", nas_ip_address=NAS_ADDRESS,
                            interim_interval=0.4, wall_offset=time.time() - loop.time())
    sid = SessionIds(time.time()).next()
    session = AccountingSession(sid, "bob", TunnelType.PPTP, 7, "198.51.100.20", NAS_ADDRESS,
                                v2["peer_address"], "mschapv2",
                                tuple(bytes.fromhex(c) for c in v2["class"]),
                                AcctAuthentic.RADIUS)
    records = []
    def pump():
        for attrs in accountant.take_requests():
            rt.submit_accounting(attrs)
        records.extend(accountant.take_records())
    accountant.start(session, loop.time())
    pump()
    while not any(r["event"] == "interim" for r in records):
        deadline = accountant.get_timer()
        await asyncio.sleep(max(0.0, deadline - loop.time()))
        accountant.handle_timer(max(deadline, loop.time()))
        pump()
    # answered before the Stop goes: FreeRADIUS's worker threads may write two requests that
    # arrive a millisecond apart in either order (a real session's are minutes apart)
    deadline = time.monotonic() + 20
    while rt.stats["accounting_acknowledged"] + rt.stats["accounting_failed"] < 2:
        assert time.monotonic() < deadline, rt.counters()
        await asyncio.sleep(0.02)
    accountant.stop(sid, Counters(5 * 2**32 + 99, 8765, 56, 78), "user hung up", loop.time())
    pump()
    deadline = time.monotonic() + 20
    while rt.stats["accounting_acknowledged"] + rt.stats["accounting_failed"] < 3:
        assert time.monotonic() < deadline, rt.counters()
        await asyncio.sleep(0.02)
    out["acct"] = {"sid": sid, "records": records}
    out["runtime"] = rt.counters()
    rt.close()

    # fail-over: the first server's address is silent, the second instance answers
    client = RadiusClient([(SILENT, 1812, SECRET), (B, 1812, SECRET)], timeout=0.3, retries=2)
    rt2 = RadiusRuntime(loop, client, bind_address=NAS_ADDRESS)
    out["failover"] = await ask(rt2, credentials(AuthMethod.MSCHAPV2, "bob", "hello"))
    out["failover_runtime"] = rt2.counters()
    rt2.close()
    print(json.dumps(out))

asyncio.run(main())
"""


def expected_keys(method: str, challenge: bytes, response: bytes, password: str = "hello",
                  ) -> dict[str, list[str]]:
    """What RFC 3079 derives from the password for the server (send, receive)."""
    from tunnels.mppe.keys import derive_start_keys
    from tunnels.ppp.auth.base import MPPEMaterial
    from tunnels.ppp.auth.chap import MSCHAPv2Response
    from tunnels.ppp.auth.verify import v1_material
    from tunnels.ppp.auth import mscrypto

    if method == "mschap":
        material = v1_material(password, challenge)
    else:
        nt = MSCHAPv2Response.decode(response).nt_response
        material = MPPEMaterial(2, mscrypto.nt_password_hash(password), nt_response=nt)
    return {str(bits): [k.hex() for k in derive_start_keys(material, bits, is_server=True)]
            for bits in (40, 56, 128)}


def test_access_accounting_and_fail_over_against_freeradius(radius_lab) -> None:
    from tunnels.ppp.auth import mscrypto
    from tunnels.ppp.auth.chap import MSCHAPv2Response

    ns, first, second = radius_lab
    out = ns.python(DRIVER % {"args": (SECRET, A, B, NAS_ADDRESS, SILENT)}, timeout=90)
    bob = dict(peer_address="10.9.0.7", session_timeout=3600.0, idle_timeout=600.0,
               groups=["vpn-users"], server=[A, 1812])
    for method in ("pap", "chap", "eap-md5", "mschap", "mschapv2"):
        got = out[method]
        assert got["success"], (method, got, first.output()[-2000:])
        assert {k: got[k] for k in bob} == bob, method
        assert got["class"] == [b"gold".hex(), b"team-a".hex()], method
    for method in ("mschap", "mschapv2"):
        got = out[method]
        want = expected_keys(method, bytes.fromhex(got["challenge"]),
                             bytes.fromhex(got["response"]))
        if method == "mschap":
            # FreeRADIUS 3.x sends MS-CHAP-MPPE-Keys with an all-zero LM key: only the 128-bit
            # key (from NtPasswordHashHash) is there; 40/56 bits are refused by name
            for bits in ("40", "56"):
                assert got["keys"].pop(bits) == NO_LM_KEY.format(bits=bits)
                del want[bits]
        assert got["keys"] == want, method
        # FreeRADIUS: MS-MPPE-Encryption-Policy Allowed, Types 40 and 128-bit
        assert got["encryption"] == ["none", "basic", "strongest"], method
    v2 = out["mschapv2"]
    response = MSCHAPv2Response.decode(bytes.fromhex(v2["response"]))
    assert v2["s"] == mscrypto.generate_authenticator_response(
        "hello", response.nt_response, response.peer_challenge, bytes.fromhex(v2["challenge"]),
        "bob")
    assert out["mschap"]["s"] == "" and out["pap"]["keys"] == {}
    alice = out["alice-pap"]
    assert alice["success"] and alice["peer_address"] is None and alice["class"] == []
    assert (out["mschapv2-bad"]["success"], out["mschapv2-bad"]["code"]) == (False, 691)
    assert (out["pap-bad"]["success"], out["pap-bad"]["code"]) == (False, 691)

    runtime = out["runtime"]
    assert runtime["callback_errors"] == 1 and "callback bug" in runtime["last_error"]
    assert runtime["accounting_acknowledged"] == 3 and runtime["accounting_failed"] == 0
    assert runtime["access_accepted"] == 5 + 1 + 20 + 1 and runtime["access_rejected"] == 2
    dropped = {k for k, v in runtime.items() if k.startswith("client_") and v}
    assert not dropped, runtime  # every reply verified, nothing retransmitted
    assert statistics.median(out["rtts"]) < 0.5, out["rtts"]

    sid = out["acct"]["sid"]
    records = [r for r in first.detail_records() if r.get("Acct-Session-Id") == sid]
    assert [r["Acct-Status-Type"] for r in records] == ["Start", "Interim-Update", "Stop"]
    start, interim, stop = records
    for record in records:
        assert values(record, "Class") == ["0x" + b"gold".hex(), "0x" + b"team-a".hex()]
        assert record["User-Name"] == "bob" and record["NAS-Port"] == "7"
        assert record["Framed-IP-Address"] == "10.9.0.7"
        assert record["Tunnel-Type:0"] == "PPTP" and record["NAS-Port-Type"] == "Virtual"
        assert record["Acct-Authentic"] == "RADIUS"
        assert record["Calling-Station-Id"] == "198.51.100.20"
    assert "Acct-Input-Octets" not in start
    assert (interim["Acct-Input-Octets"], interim["Acct-Output-Octets"],
            interim["Acct-Input-Packets"]) == ("1234", "5678", "12")
    assert (stop["Acct-Input-Octets"], stop["Acct-Input-Gigawords"],
            stop["Acct-Output-Octets"]) == ("99", "5", "8765")
    assert stop["Acct-Terminate-Cause"] == "User-Request"
    lines = first.accounting_log.read_text().splitlines()
    assert [ln.split()[0] for ln in lines if sid in ln] == ["Start", "Interim-Update", "Stop"]
    local = out["acct"]["records"]
    assert [r["event"] for r in local] == ["start", "interim", "stop"]
    assert local[-1]["input_octets"] == 5 * 2**32 + 99

    fo = out["failover"]
    assert fo["success"] and fo["server"] == [B, 1812]
    assert fo["keys"] == expected_keys("mschapv2", bytes.fromhex(fo["challenge"]),
                                       bytes.fromhex(fo["response"]))
    counters = out["failover_runtime"]
    assert counters["client_fail_overs"] == 1 and counters["client_retransmissions"] == 1
    assert second.running() and not second.detail_records()
    print(f"Access round trip to FreeRADIUS (MS-CHAP v2, 20 runs): median "
          f"{statistics.median(out['rtts']) * 1000:.2f} ms, max {max(out['rtts']) * 1000:.2f} ms")


EAP_DRIVER = """
import asyncio, json
from tunnels.ppp.auth.eap import EapAuthenticator, EapPeer
from tunnels.radius.access import NasInfo, access_request, verdict_from
from tunnels.radius.attributes import Attr, TunnelType
from tunnels.radius.client import RadiusClient
from tunnels.runtime.radius import RadiusRuntime

SECRET, A, NAS_ADDRESS = %(args)r
NAS = NasInfo("vpnlab", NAS_ADDRESS, 7, TunnelType.PPTP, "198.51.100.20", NAS_ADDRESS)

class Relay:
    # the EAP authenticator's verifier: each Response to FreeRADIUS, the answer back later
    relays_eap = True

    def __init__(self, rt, loop):
        self.rt, self.loop, self.auth, self.trace = rt, loop, None, []

    def verify(self, creds):
        attrs = access_request(creds, NAS)
        def answered(event):
            got = getattr(event, "attributes", None)
            verdict = verdict_from(event, creds)
            self.trace.append({
                "sent_eap": creds.eap_message.hex(), "sent_state": creds.state.hex(),
                "event": type(event).__name__,
                "eap": b"".join(got.get_all(Attr.EAP_MESSAGE)).hex() if got else "",
                "state": bytes(got.get(Attr.STATE) or b"").hex() if got else "",
                "success": verdict.success, "message": verdict.message,
                "peer_address": verdict.authorization.peer_address})
            self.auth.conclude(verdict, self.loop.time())
        self.rt.submit_access(attrs, answered)
        return None

async def conversation(rt, user, password):
    loop = asyncio.get_running_loop()
    relay = Relay(rt, loop)
    auth = EapAuthenticator(relay, __import__("os").urandom)
    relay.auth = auth
    peer = EapPeer(user, password)
    wire = []
    auth.start(loop.time())
    deadline = loop.time() + 20
    while (auth.outcome is None or peer.outcome is None) and loop.time() < deadline:
        for info in auth.packets_to_send():
            wire.append(["server", info.hex()])
            peer.receive(info, loop.time())
        for info in peer.packets_to_send():
            wire.append(["peer", info.hex()])
            auth.receive(info, loop.time())
        await asyncio.sleep(0.005)
    for info in auth.packets_to_send():
        wire.append(["server", info.hex()])
    return {"auth": [auth.outcome.success, auth.outcome.error_code, auth.outcome.message]
            if auth.outcome else None,
            "peer": peer.outcome.success if peer.outcome else None,
            "wire": wire, "trace": relay.trace}

async def main():
    loop = asyncio.get_running_loop()
    rt = RadiusRuntime(loop, RadiusClient([(A, 1812, SECRET)], timeout=1.0, retries=3),
                       bind_address=NAS_ADDRESS)
    out = {"bob": await conversation(rt, "bob", "hello"),
           "alice": await conversation(rt, "alice", "s3cret-2"),
           "bob-bad": await conversation(rt, "bob", "wrong"),
           "runtime": rt.counters()}
    rt.close()
    print(json.dumps(out))

asyncio.run(main())
"""


def test_eap_md5_relayed_to_freeradius(radius_lab) -> None:
    """RFC 3579 against FreeRADIUS's eap module (md5): the Identity Response goes in
    EAP-Message, the Access-Challenge's EAP-MD5 Request reaches the peer unchanged, the second
    Access-Request echoes its State, and the Accept's EAP-Success (or the Reject's
    EAP-Failure for a wrong password) is what the peer gets."""
    ns, first, _ = radius_lab
    out = ns.python(EAP_DRIVER % {"args": (SECRET, A, NAS_ADDRESS)}, timeout=60)
    for user, granted in (("bob", True), ("alice", True), ("bob-bad", False)):
        got = out[user]
        assert got["auth"] is not None and got["auth"][0] is granted, (user, got,
                                                                     first.output()[-3000:])
        assert got["peer"] is granted, (user, got)
        trace, wire = got["trace"], got["wire"]
        final = "AccessAccepted" if granted else "AccessRejected"
        assert [t["event"] for t in trace] == ["AccessChallenged", final], trace
        challenge, last = trace
        peer_sent = [info for who, info in wire if who == "peer"]
        server_sent = [info for who, info in wire if who == "server"]
        # the peer's Identity and MD5 Responses, as sent; State only on the second
        assert [t["sent_eap"] for t in trace] == peer_sent
        assert challenge["sent_state"] == "" and challenge["state"]
        assert last["sent_state"] == challenge["state"]
        # FreeRADIUS's MD5 Request (type 4) and Success/Failure went to the peer unchanged
        assert bytes.fromhex(challenge["eap"])[4] == 4
        assert server_sent[1:] == [challenge["eap"], last["eap"]], (server_sent, trace)
        assert bytes.fromhex(last["eap"])[0] == (3 if granted else 4)
    assert out["bob"]["trace"][-1]["peer_address"] == "10.9.0.7"  # reply items as for CHAP
    assert out["bob-bad"]["auth"][1] == 691
    dropped = {k: v for k, v in out["runtime"].items() if k.startswith("client_") and v}
    assert not dropped, out["runtime"]
