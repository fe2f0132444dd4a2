"""Our RadiusClient against a real FreeRADIUS (Debian's 3.2), started only inside a network
namespace this test creates (`unshare --net`, lo up; see tests/test_runtime_netns.py): PAP,
CHAP, MS-CHAP v1 and v2 are accepted with the MPPE keys RFC 3079 derives, a wrong password gets
Access-Reject with MS-CHAP-Error E=691, accounting is acknowledged, and a dead first server is
failed over. The server requires our Message-Authenticator; our client requires one in every
Access-Accept/Reject, which stock 3.2.1 sends only with EAP (its PAP Accept was dropped and
counted as missing_message_authenticator), so the site adds it to every reply as 3.2.5 does."""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from tests.test_runtime_netns import Daemon, Namespace

pytestmark = pytest.mark.netns
FREERADIUS = shutil.which("freeradius") or "/usr/sbin/freeradius"
RADDB = Path("/etc/freeradius/3.0")
SECRET = "vpnlab-secret"


def _skip_reason() -> str | None:
    if not Path(FREERADIUS).exists():
        return ("freeradius is not installed (Debian package freeradius; ci/setup.sh installs "
                "it): /usr/sbin/freeradius missing")
    if not RADDB.is_dir():
        return f"freeradius is installed but {RADDB} is missing"
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        return "unshare/nsenter (util-linux) missing"
    try:
        subprocess.run(["unshare", "--net", "true"], check=True, capture_output=True, timeout=10)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"cannot create a network namespace (needs root): {exc}"
    return None


def raddb(tmp: Path) -> Path:
    """A copy of Debian's configuration with one user, one client and no privilege drop."""
    conf = tmp / "raddb"
    shutil.copytree(RADDB, conf, symlinks=True)
    radiusd = conf / "radiusd.conf"
    text = re.sub(r"^\s*(user|group)\s*=.*$", "", radiusd.read_text(), flags=re.M)
    radiusd.write_text(text.replace("${localstatedir}/run/${name}", str(tmp / "run")))
    (tmp / "run").mkdir()
    authorize = conf / "mods-config" / "files" / "authorize"
    authorize.write_text('bob Cleartext-Password := "hello"\n' + authorize.read_text())
    # FreeRADIUS 3.2.1 signs only EAP replies; 3.2.5 (the Blast-RADIUS release) signs every
    # Access-Accept/Reject. Our client requires the signature, so the site does what 3.2.5 does.
    site = conf / "sites-available" / "default"
    sign = "\n\tupdate reply {\n\t\t&Message-Authenticator := 0x00\n\t}\n"
    text = site.read_text().replace("\npost-auth {\n", "\npost-auth {" + sign, 1)
    site.write_text(text.replace("Post-Auth-Type REJECT {\n", "Post-Auth-Type REJECT {" + sign, 1))
    (conf / "clients.conf").write_text(textwrap.dedent(f"""\
        client vpnlab {{
            ipaddr = 127.0.0.1
            secret = {SECRET}
            require_message_authenticator = yes
        }}
        """))
    return conf


@pytest.fixture
def freeradius(tmp_path: Path):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    ns = Namespace()
    daemon = None
    try:
        conf = raddb(tmp_path)
        daemon = Daemon(ns.argv([FREERADIUS, "-X", "-f", "-d", str(conf), "-l", "stdout"]))
        deadline = time.monotonic() + 30
        while not any("Ready to process requests" in line for line in daemon.lines):
            if daemon.proc.poll() is not None or time.monotonic() > deadline:
                daemon.stop()
                pytest.fail("freeradius did not start: " + "\n".join(daemon.lines[-40:])
                            + daemon.stderr[-2000:])
            time.sleep(0.05)
        yield ns, daemon
    finally:
        if daemon is not None:
            daemon.stop()
        ns.close()


DRIVER = """
import hashlib, json, os, select, socket, sys, time
from tunnels.ppp.auth import mscrypto
from tunnels.radius.attributes import Attr, Attributes, AcctStatusType, NASPortType, TunnelType
from tunnels.radius.client import RadiusClient
from tunnels.radius.msvsa import (MS, chap_attributes, mppe_keys, mschap_error_code,
                                  mschap_v1_attributes, mschap_v2_attributes, pap_attributes)

SECRET = %(secret)r
NAS = [(Attr.NAS_IDENTIFIER, "vpnlab"), (Attr.NAS_PORT_TYPE, NASPortType.VIRTUAL),
       (Attr.TUNNEL_TYPE, TunnelType.PPTP)]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 0))

def run(client, start):
    rid = start(client)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for dest, data in client.datagrams_to_send():
            sock.sendto(data, dest)
        event = client.next_event()
        if event is not None:
            return event
        timer = client.get_timer()
        wait = 0.2 if timer is None else max(0.0, timer - time.monotonic())
        if select.select([sock], [], [], min(wait, 0.2))[0]:
            data, src = sock.recvfrom(4096)
            client.receive_datagram(src, data, time.monotonic())
        if timer is not None and time.monotonic() >= timer:
            client.handle_timer(time.monotonic())
    raise SystemExit("no event")

def summary(event, client):
    attrs = getattr(event, "attributes", Attributes())
    keys = mppe_keys(attrs)
    v1 = attrs.get(MS.MS_CHAP_MPPE_KEYS)
    success = attrs.get(MS.MS_CHAP2_SUCCESS)
    return {"event": type(event).__name__, "server": list(getattr(event, "server", [])),
            "keys": None if keys is None else [k.hex() for k in keys],
            "v1_keys": None if v1 is None else [v1.lm_key.hex(), v1.nt_key.hex()],
            "success": None if success is None else success.message,
            "error": mschap_error_code(attrs), "counters": dict(client.counters),
            "policy": attrs.get(MS.MS_MPPE_ENCRYPTION_POLICY),
            "types": attrs.get(MS.MS_MPPE_ENCRYPTION_TYPES)}

servers = [("127.0.0.1", 1812, SECRET)]
out = {}
auth = lambda attrs: (lambda c: c.authenticate(attrs.plus(*NAS), time.monotonic()))
out["pap"] = summary(run(c := RadiusClient(servers), auth(pap_attributes("bob", "hello"))), c)
ch = os.urandom(16)
resp = hashlib.md5(bytes([7]) + b"hello" + ch).digest()
out["chap"] = summary(run(c := RadiusClient(servers), auth(chap_attributes("bob", 7, ch, resp))), c)
ch8 = os.urandom(8)
v1 = mschap_v1_attributes("bob", 1, ch8, bytes(24), mscrypto.nt_challenge_response_v1(ch8, "hello"))
out["mschap"] = summary(run(c := RadiusClient(servers), auth(v1)), c)
for name, password in (("mschapv2", "hello"), ("mschapv2_bad", "wrong")):
    ach, pch = os.urandom(16), os.urandom(16)
    nt = mscrypto.generate_nt_response(ach, pch, "bob", password)
    out[name] = summary(run(c := RadiusClient(servers),
                            auth(mschap_v2_attributes("bob", 9, ach, pch, nt))), c)
    out[name]["expect"] = {"ach": ach.hex(), "pch": pch.hex(), "nt": nt.hex(),
        "s": mscrypto.generate_authenticator_response("hello", nt, pch, ach, "bob")}
acct = [(Attr.ACCT_STATUS_TYPE, AcctStatusType.START), (Attr.ACCT_SESSION_ID, "vpnlab-1"),
        (Attr.USER_NAME, "bob"), *NAS]
account = lambda c: c.account(acct, time.monotonic())
out["acct"] = summary(run(c := RadiusClient(servers), account), c)
dead_first = [("127.0.0.1", 1912, SECRET), ("127.0.0.1", 1812, SECRET)]
out["failover"] = summary(run(c := RadiusClient(dead_first, timeout=0.3, retries=2),
                              auth(pap_attributes("bob", "hello"))), c)
print(json.dumps(out))
"""


def test_freeradius_answers_pap_chap_mschap_and_accounting(freeradius) -> None:
    from tunnels.mppe.keys import asymmetric_start_key, master_key_v2
    from tunnels.ppp.auth import mscrypto

    ns, daemon = freeradius
    out = ns.python(DRIVER % {"secret": SECRET}, timeout=60)
    for case in ("pap", "chap", "mschap", "mschapv2", "failover"):
        assert out[case]["event"] == "AccessAccepted", (
            case, out[case]["counters"], [ln for ln in daemon.lines if "Sent" in ln][:6])
    good = out["mschapv2"]
    exp = good["expect"]
    assert good["success"] == exp["s"]  # the server proved it knows the password (RFC 2759)
    master = master_key_v2(mscrypto.nt_password_hash("hello"), bytes.fromhex(exp["nt"]))
    # MS-MPPE-Send-Key is the server's (the NAS's) send key, Recv-Key its receive key
    assert good["keys"] == [asymmetric_start_key(master, 16, True, True).hex(),
                            asymmetric_start_key(master, 16, False, True).hex()]
    assert good["policy"] is not None and good["types"] is not None
    v1 = out["mschap"]["v1_keys"]
    assert v1 is not None and v1[1] == mscrypto.hash_nt_password_hash(
        mscrypto.nt_password_hash("hello")).hex()
    bad = out["mschapv2_bad"]
    assert bad["event"] == "AccessRejected" and bad["error"] == 691
    assert out["acct"]["event"] == "AccountingAcknowledged"
    fo = out["failover"]
    assert fo["server"] == ["127.0.0.1", 1812]
    assert fo["counters"].get("fail_overs") == 1 and fo["counters"].get("retransmissions") == 1
    for case in out.values():  # every reply verified: nothing dropped
        assert not {k for k in case["counters"]} - {"fail_overs", "retransmissions"}, case
