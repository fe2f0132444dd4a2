"""The benchmark framework without root: its command line, the row tables, the in-memory data
path. Functional checks only: benchmarks are not tests, nothing here is timed."""

from __future__ import annotations

import pytest

from bench import bringup, common, datapath, sessions, throughput
from bench.__main__ import BENCHMARKS, main


def test_every_benchmark_has_a_subcommand_with_json_output(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in BENCHMARKS)


def test_a_row_the_scenario_refuses_is_not_built_yet():
    assert common.Variant("x", {"protocol": "ipx"}).unavailable().startswith(common.NOT_BUILT)
    pptp = next(v for v in throughput.PROTOCOLS if v.name.startswith("pptp"))
    assert pptp.unavailable() is None


@pytest.mark.parametrize("table", [throughput.PROTOCOLS, sessions.PROTOCOLS, bringup.PROTOCOLS])
def test_rows_are_named_once(table):
    names = [v.name for v in table]
    assert len(names) == len(set(names))


def test_datapath_carries_every_packet_in_each_mode():
    result = datapath.measure(packets=50, size=200, repeat=1)
    assert set(result["rows"]) == set(datapath.rows())
    assert "us/packet" in datapath.table(result)


def test_tables_print_skipped_rows():
    text = throughput.table({"seconds": 1, "repeat": 1, "udp_rate": "1M", "rows": [
        {"name": "l2tp", "skipped": "not built yet (reason)"}]})
    assert "l2tp" in text and "not built yet" in text and "(reason)" not in text



def test_sessions_rows_need_a_protocol_the_load_generator_speaks():
    from tunnels import load

    for variant in sessions.PROTOCOLS:
        why = sessions.skip_reason(variant)
        if variant.params["protocol"] not in load.PROTOCOLS:
            assert why is not None and why.startswith(common.NOT_BUILT)


def test_sessions_l2tp_row_configures_server_and_generator_alike():
    import argparse
    import tomllib

    from tunnels import load
    from tunnels.config import ServerConfig

    variant = next(v for v in sessions.PROTOCOLS if v.params["protocol"] == "l2tp")
    server = ServerConfig.from_mapping(tomllib.loads(sessions._server_config(
        "10.0.0.1", 100, variant)))
    assert server.protocols == ("l2tp",) and server.encryption.value == "none"
    sub = argparse.ArgumentParser().add_subparsers()
    load.register(sub)
    args = sub.choices["load"].parse_args(["--server", "10.0.0.1", "--user", "u",
                                           "--password", "p",
                                           *sessions._load_args(variant, 50)])
    assert (args.protocol, args.encryption, args.sessions_per_tunnel) == ("l2tp", "none", 50)
