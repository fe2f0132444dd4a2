"""The client daemon when IPCP renegotiates (a second SessionUp for the same call): the
interface and routes stay when the addresses do, instead of failing to create the TUN device
twice (found by the L2TP lossy-link case: a lost Configure-Ack renegotiates IPCP)."""

from __future__ import annotations

import pytest

from tunnels.client import VPNClient
from tunnels.config import ClientConfig
from tunnels.stacks.pptp import SessionUp


class _Pump:
    tun = object()  # an interface exists already

    def now(self) -> float:
        return 0.0


def _client(monkeypatch):
    client = VPNClient(ClientConfig(server="203.0.113.2", username="alice", password="p"))
    client.pump = _Pump()  # type: ignore[assignment]
    client.state.update(state="up", local_address="10.10.100.2", peer_address="10.10.100.1")
    emitted, rebuilt = [], []
    monkeypatch.setattr(client, "emit", lambda name, **f: emitted.append(name))
    monkeypatch.setattr(client, "_make_interface", lambda e: rebuilt.append(e))
    monkeypatch.setattr(client, "_teardown_local", lambda: rebuilt.append("teardown"))
    return client, emitted, rebuilt


def test_same_addresses_keep_the_interface(monkeypatch):
    client, emitted, rebuilt = _client(monkeypatch)
    client._tunnel_up(SessionUp(1, 2, "203.0.113.2", "alice", "10.10.100.2", "10.10.100.1",
                                (), ()))
    assert emitted == ["renegotiated"] and rebuilt == []
    assert client.state["state"] == "up"


class _Rebuilt(Exception):
    pass


def test_new_addresses_rebuild_it(monkeypatch):
    client, emitted, rebuilt = _client(monkeypatch)

    def make(event):
        rebuilt.append(event)
        raise _Rebuilt  # what follows (routes, status) is the first bring-up's path

    monkeypatch.setattr(client, "_make_interface", make)
    with pytest.raises(_Rebuilt):
        client._tunnel_up(SessionUp(1, 2, "203.0.113.2", "alice", "10.10.100.7",
                                    "10.10.100.1", (), ()))
    assert rebuilt[0] == "teardown" and rebuilt[1].local_address == "10.10.100.7"
