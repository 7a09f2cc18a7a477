"""A real Prometheus scrapes postgate; the shipped alerting rules pass promtool."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.integration.support.daemon import Daemon
from tests.integration.support.needs import need
from tests.integration.support.net import free_port
from tests.integration.test_metrics import RULES, send_traffic
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "conf" / "prometheus" / "postgate-alerts.yml"
ALERT_TESTS = Path(__file__).resolve().parent / "prometheus" / "alerts_test.yml"


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        need(f"{name} is not installed (Debian package prometheus)")
    assert found is not None
    return found


def test_promtool_checks_the_shipped_alerts() -> None:
    done = subprocess.run(
        [tool("promtool"), "check", "rules", str(ALERTS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 == done.returncode, done.stdout + done.stderr
    assert "SUCCESS: 9 rules found" in done.stdout


def test_promtool_unit_tests_fire_the_alerts() -> None:
    done = subprocess.run(
        [tool("promtool"), "test", "rules", ALERT_TESTS.name],
        cwd=ALERT_TESTS.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 == done.returncode, done.stdout + done.stderr


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[int, int, Path]]:
    """A private Prometheus scraping (every second) a postgate metrics port; yields both ports."""
    binary = tool("prometheus")
    metrics, web = free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{ALERTS}']\n"
        "scrape_configs:\n"
        "  - job_name: postgate\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{metrics}']}}]\n"
    )
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{web}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        prometheus_log = tmp_path / "prometheus.log"
        wait_until(lambda: _ready(web, proc), prometheus_log.read_text, 30)
        yield metrics, web, tmp_path
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def _ready(web: int, proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"prometheus exited {proc.returncode}")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{web}/-/ready", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def query(web: int, expr: str) -> dict[str, float]:
    """Instant query: each result's rule (or "") -> value."""
    url = f"http://127.0.0.1:{web}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    assert "success" == body["status"], body
    return {r["metric"].get("rule", ""): float(r["value"][1]) for r in body["data"]["result"]}


def test_prometheus_scrapes_per_rule_counts(prometheus: tuple[int, int, Path]) -> None:
    metrics, web, tmp_path = prometheus
    port = free_port()
    config = tmp_path / "postgate.toml"
    config.write_text(
        f'[daemon]\nlisten = ["tcp:{port}:interface=127.0.0.1"]\n'
        f'[metrics]\nlisten = "tcp:{metrics}:interface=127.0.0.1"\n' + RULES
    )
    expected = {"DEFAULT": 5.0, "HELO_LOCALHOST": 3.0, "LATER": 2.0, "TAG": 1.0, "TRUSTED": 4.0}
    with Daemon(config):
        send_traffic(port)
        found: dict[str, float] = {}

        def scraped() -> bool:
            found.clear()
            found.update(query(web, "postgate_decisions_total > 0"))
            return found == expected

        wait_until(scraped, lambda: f"per-rule counts in Prometheus: {found}", 30)
        assert {"NEW_BLOCK": 5.0} == query(web, 'postgate_observed_total{action_class="5xx"}')
        assert {"": 1.0} == query(web, 'up{job="postgate"}')
        assert {"": 15.0} == query(web, "sum(postgate_requests_total)")
    rules_url = f"http://127.0.0.1:{web}/api/v1/rules"
    with urllib.request.urlopen(rules_url, timeout=5) as response:
        groups = json.load(response)["data"]["groups"]
    assert ["postgate"] == [group["name"] for group in groups]
    assert 9 == len(groups[0]["rules"])
