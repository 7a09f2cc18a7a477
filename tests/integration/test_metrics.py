"""/metrics over HTTP from a running daemon, observe mode on live traffic, and log redaction."""

from __future__ import annotations

import http.client
import json
import socket
from typing import TYPE_CHECKING

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.support.daemon import Daemon, ask, connect
from tests.integration.support.net import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

RULES = """
[[rules]]
id = "NEW_BLOCK"
mode = "observe"
helo_name = "bad.example"
action = "554 5.7.1 would refuse {helo_name}"

[[rules]]
id = "HELO_LOCALHOST"
helo_name = "localhost"
action = "554 5.7.1 No"

[[rules]]
id = "LATER"
sender = "slow@example.org"
action = "DEFER_IF_PERMIT try later"

[[rules]]
id = "TRUSTED"
sender = "boss@example.org"
action = "OK"

[[rules]]
id = "TAG"
sender = "tag@example.org"
action = "PREPEND X-Tag: yes"
"""

BASE = {"request": "smtpd_access_policy", "client_address": "192.0.2.77"}
# (request, expected reply, how many times)
TRAFFIC = [
    ({"protocol_state": "RCPT", "helo_name": "localhost"}, b"action=554 5.7.1 No\n\n", 3),
    (
        {"protocol_state": "MAIL", "sender": "slow@example.org"},
        b"action=DEFER_IF_PERMIT try later\n\n",
        2,
    ),
    ({"protocol_state": "RCPT", "sender": "boss@example.org"}, b"action=OK\n\n", 4),
    ({"protocol_state": "DATA", "sender": "tag@example.org"}, b"action=PREPEND X-Tag: yes\n\n", 1),
    (
        {"protocol_state": "RCPT", "helo_name": "bad.example", "sender": "a@b.example"},
        b"action=DUNNO\n\n",
        5,
    ),
]


def send_traffic(port: int) -> None:
    with connect(("127.0.0.1", port), socket.AF_INET) as sock:
        for attrs, expected, times in TRAFFIC:
            for _ in range(times):
                assert expected == ask(sock, BASE | attrs)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, sorted labels)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    response = conn.getresponse()
    assert 200 == response.status
    assert response.getheader("Content-Type", "").startswith("text/plain; version=0.0.4")
    text = response.read().decode()
    conn.close()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def by_label(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str
) -> dict[tuple[str, ...], float]:
    return {
        tuple(v for _, v in labels): value for (n, labels), value in samples.items() if n == name
    }


def nonzero(counts: dict[tuple[str, ...], float]) -> dict[tuple[str, ...], float]:
    return {key: value for key, value in counts.items() if value}


@pytest.fixture
def metrics_daemon(tmp_path: Path) -> Iterator[tuple[Daemon, int, int]]:
    port, metrics = free_port(), free_port()
    config = tmp_path / "postgate.toml"
    config.write_text(
        f'[daemon]\nlisten = ["tcp:{port}:interface=127.0.0.1"]\n'
        f'[metrics]\nlisten = "tcp:{metrics}:interface=127.0.0.1"\n' + RULES
    )
    with Daemon(config) as daemon:
        yield daemon, port, metrics


class TestScrape:
    def test_exact_counts_per_rule_and_action_class(
        self, metrics_daemon: tuple[Daemon, int, int]
    ) -> None:
        _daemon, port, metrics = metrics_daemon
        send_traffic(port)
        samples = scrape(metrics)
        assert {
            ("DUNNO", "DEFAULT"): 5,
            ("5xx", "HELO_LOCALHOST"): 3,
            ("4xx", "LATER"): 2,
            ("other", "TAG"): 1,
            ("OK", "TRUSTED"): 4,
        } == nonzero(by_label(samples, "postgate_decisions_total"))  # (action_class, rule)
        assert 0 == by_label(samples, "postgate_decisions_total")[("DUNNO", "ON_ERROR")]
        assert {("5xx", "NEW_BLOCK"): 5} == by_label(samples, "postgate_observed_total")
        states = {k: v for k, v in by_label(samples, "postgate_requests_total").items() if v}
        assert {("RCPT",): 12, ("MAIL",): 2, ("DATA",): 1} == states
        assert 15 == samples[("postgate_decision_seconds_count", ())]
        assert 15 == samples[("postgate_decision_seconds_bucket", (("le", "+Inf"),))]
        assert 0 == samples[("postgate_evaluation_errors_total", ())]
        assert (
            1 == samples[("postgate_connections_open", ())]
            or 0 == samples[("postgate_connections_open", ())]
        )

    def test_observed_rule_is_logged_not_answered(
        self, metrics_daemon: tuple[Daemon, int, int]
    ) -> None:
        daemon, port, _metrics = metrics_daemon
        send_traffic(port)
        daemon.wait_for_log('"event":"observed"', count=5)
        events = [
            json.loads(line) for line in daemon.log().splitlines() if '"event":"observed"' in line
        ]
        assert 5 == len(events)
        assert {
            "rule": "NEW_BLOCK",
            "action": "554 5.7.1 would refuse bad.example",
            "answered_by": "DEFAULT",
            "sender": "a@b.example",
            "client_address": "192.0.2.77",
        }.items() <= events[0].items()

    def test_refusals_and_protocol_errors_are_counted(
        self, metrics_daemon: tuple[Daemon, int, int]
    ) -> None:
        _daemon, port, metrics = metrics_daemon
        with connect(("127.0.0.1", port), socket.AF_INET) as sock:
            sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")  # the policy port speaks no HTTP
            assert b"" == sock.recv(100)
        samples = scrape(metrics)
        assert 1 == samples[("postgate_protocol_errors_total", ())]
        assert 0 == samples[("postgate_connections_refused_total", (("reason", "network"),))]

    def test_only_metrics_path_is_served(self, metrics_daemon: tuple[Daemon, int, int]) -> None:
        _daemon, _port, metrics = metrics_daemon
        conn = http.client.HTTPConnection("127.0.0.1", metrics, timeout=10)
        conn.request("GET", "/")
        assert 404 == conn.getresponse().status
        conn.close()


def test_metrics_listener_refuses_peers_not_in_its_allow_list(tmp_path: Path) -> None:
    port, metrics = free_port(), free_port()
    config = tmp_path / "postgate.toml"
    config.write_text(
        f'[daemon]\nlisten = ["tcp:{port}:interface=127.0.0.1"]\n'
        f'[metrics]\nlisten = "tcp:{metrics}:interface=127.0.0.1"\nallow = ["10.0.0.0/8"]\n' + RULES
    )
    with Daemon(config) as daemon:
        with socket.create_connection(("127.0.0.1", metrics), timeout=10) as sock:
            sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            try:
                got = sock.recv(100)
            except ConnectionResetError:
                got = b""
        assert b"" == got  # closed before any HTTP
        daemon.wait_for_log('"listener":"metrics"')
    refused = [
        json.loads(line) for line in daemon.log().splitlines() if '"listener":"metrics"' in line
    ]
    assert "not in metrics.allow" == refused[0]["reason"]


def test_decision_log_redacts_addresses(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "postgate.toml"
    config.write_text(
        f'[daemon]\nlisten = ["tcp:{port}:interface=127.0.0.1"]\n'
        '[log]\naddresses = "hash"\nkey = "log.key"\nclient_address = "network"\n' + RULES
    )
    with Daemon(config) as daemon:
        send_traffic(port)
        daemon.wait_for_log('"event":"observed"', count=5)
        daemon.wait_for_log('"event":"decision"', count=15)  # batched per reactor turn
        log = daemon.log()
    assert 0o600 == (tmp_path / "log.key").stat().st_mode & 0o777
    decisions = [json.loads(line) for line in log.splitlines() if '"event":"decision"' in line]
    observed = [json.loads(line) for line in log.splitlines() if '"event":"observed"' in line]
    assert 15 == len(decisions)
    assert '"boss@' not in log
    assert '"a@b.example"' not in log  # as a whole value: a hash may end in "a"
    for event in decisions + observed:
        assert "192.0.2.0/24" == event["client_address"]
    senders = {event["sender"] for event in decisions} - {""}  # HELO_LOCALHOST's had none
    assert all(s.startswith("h-") and s.count("@") == 1 for s in senders), senders
    assert {"example.org", "b.example"} == {s.split("@")[1] for s in senders}
    assert 4 == sum(1 for e in decisions if e["rule"] == "TRUSTED")
    assert 1 == len(
        {e["sender"] for e in decisions if e["rule"] == "TRUSTED"}
    )  # stable per address


def test_metrics_on_a_unix_socket(tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "metrics.sock"
    config = tmp_path / "postgate.toml"
    config.write_text(
        f'[daemon]\nlisten = ["tcp:{port}:interface=127.0.0.1"]\n'
        f'[metrics]\nlisten = "unix:{path}:mode=600"\n' + RULES
    )
    with Daemon(config):
        send_traffic(port)
        assert 0o600 == path.stat().st_mode & 0o777
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(str(path))
            sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            body = b""
            while chunk := sock.recv(65536):
                body += chunk
    head, _, text = body.decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.0 200")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert 4 == by_label(samples, "postgate_decisions_total")[("OK", "TRUSTED")]
