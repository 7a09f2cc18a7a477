"""A Prometheus stand-in for the benchmark: GET /metrics every second while load runs.

`postgate-metrics` is the bench config plus a ``[metrics]`` listener; this
scrapes it once a second (Prometheus's default is every 15 s, so the cost
measured is an upper bound) and checks that every scrape succeeded and that
the decision counts grew.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import threading
import time
import tomllib
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

INTERVAL: Final = 1.0
NAME: Final = "postgate-metrics"


def metrics_config(corpus_dir: Path, port: int) -> Path:
    """The bench config with a metrics listener on ``port`` (loopback)."""
    config = corpus_dir / f"{NAME}.toml"
    text = (corpus_dir / "postgate.toml").read_text(encoding="utf-8")
    config.write_text(text + f'\n[metrics]\nlisten = "tcp:{port}:interface=127.0.0.1"\n')
    return config


def port_of(config: Path) -> int:
    listen = tomllib.loads(config.read_text(encoding="utf-8"))["metrics"]["listen"]
    return int(listen.split(":")[1])


class Scraper(threading.Thread):
    """Scrapes until stopped; counts scrapes, failures and the last decision total."""

    def __init__(self, port: int) -> None:
        super().__init__(name="bench-scraper", daemon=True)
        self.port = port
        self.done = threading.Event()
        self.scrapes = self.failures = 0
        self.decisions = 0.0
        self.bytes = 0
        self.seconds = 0.0  # summed over the scrapes: what serving them took, seen from here

    def run(self) -> None:
        while not self.done.wait(INTERVAL):
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            started = time.perf_counter()
            try:
                conn.request("GET", "/metrics")
                body = conn.getresponse().read().decode()
            except (OSError, http.client.HTTPException):
                self.failures += 1
                continue
            finally:
                conn.close()
            self.seconds += time.perf_counter() - started
            self.scrapes += 1
            self.bytes = len(body)
            found = re.findall(r"^postgate_decisions_total\{[^}]*\} (\S+)$", body, re.MULTILINE)
            self.decisions = sum(float(v) for v in found)


@contextlib.contextmanager
def scraping(config: Path) -> Iterator[Scraper]:
    scraper = Scraper(port_of(config))
    scraper.start()
    try:
        yield scraper
    finally:
        scraper.done.set()
        scraper.join(10)
        print(
            f"  scraped /metrics {scraper.scrapes} times ({scraper.failures} failed, "
            f"{scraper.bytes} bytes, {1000 * scraper.seconds / max(scraper.scrapes, 1):.2f} ms "
            f"each), {scraper.decisions:.0f} decisions counted",
            flush=True,
        )
