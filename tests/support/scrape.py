"""The proxy's GET /metrics on the link server, parsed."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from tests.support.http import get


class Scrape:
    def __init__(self, port: int):
        status, headers, body = get(f"http://127.0.0.1:{port}/metrics", timeout=15)
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        self.families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        self.samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                        for f in self.families.values() for s in f.samples}

    def __call__(self, name: str, **labels: str) -> float:
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape_until(port: int, ok, timeout: float = 5.0) -> Scrape:
    deadline = time.monotonic() + timeout
    while True:
        m = Scrape(port)
        if ok(m) or time.monotonic() > deadline:
            return m
        time.sleep(0.05)
