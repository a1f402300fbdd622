"""The admin listener (admin.listen): /metrics, /healthz and /readyz on an address of their own,
and the public link port without /metrics and /readyz, against the proxy process."""

from __future__ import annotations

import json

import pytest

import smtp_offload
from tests.support.http import get
from tests.support.mail import message, text
from tests.support.net import free_port, two_free_ports, wait_port
from tests.support.scrape import Scrape
from tests.support.proc import summary_of


def test_admin_listener_serves_health_and_metrics_and_the_public_port_does_not(make_proxy, sink):
    admin = free_port()
    proxy = make_proxy({"admin": {"listen": f"127.0.0.1:{admin}"}})
    assert proxy.send(message(text()))[0] == 250
    m = Scrape(admin)
    assert m("smtp_offload_messages_total", outcome="relayed", reply_class="2xx") == 1
    assert get(f"http://127.0.0.1:{admin}/healthz")[::2] == (200, b"ok")
    status, headers, body = get(f"http://127.0.0.1:{admin}/readyz")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert json.loads(body) == {"status": "ready", "storage": "ok", "downstream": "ok"}
    assert get(f"http://127.0.0.1:{admin}/f/anything")[0] == 404  # no link pages there
    # the public port: the link pages and /healthz (load balancers' liveness), nothing internal
    public = f"http://127.0.0.1:{proxy.links_port}"
    assert get(f"{public}/metrics")[0] == 404
    assert get(f"{public}/readyz")[0] == 404
    assert get(f"{public}/healthz")[::2] == (200, b"ok")
    assert get(f"{public}/f/not-a-link")[0] == 403
    (started,) = proxy.events("started")
    assert started["admin"] == f"127.0.0.1:{admin}"
    # With log.summary off, JSON logs are JSON lines only
    assert all(line.startswith("{") for line in proxy.log_path.read_text().splitlines())


@pytest.mark.parametrize("how", ["admin.listen", "links.worker_port_base"])
def test_each_worker_is_scraped_on_its_own_port(make_proxy, sink, how):
    """With server.workers > 1 the shared port reaches an arbitrary worker: each worker also
    listens on a port of its own (admin.listen + i, or the older links.worker_port_base + i)."""
    base = two_free_ports()
    own = {"admin": {"listen": f"127.0.0.1:{base}"}} if how == "admin.listen" else \
        {"links": {"worker_port_base": base}}
    proxy = make_proxy({"server": {"workers": 2}, "log": {"summary": True}, **own})
    for port in (base, base + 1):
        wait_port(port)
    for _ in range(4):
        assert proxy.send(message(text()))[0] == 250
    counts = [Scrape(port)("smtp_offload_messages_total", outcome="relayed", reply_class="2xx")
              for port in (base, base + 1)]
    assert sum(counts) == 4  # each worker counts its own; together they add up
    for port in (base, base + 1):
        assert get(f"http://127.0.0.1:{port}/readyz")[0] == 200
    # the start-up summary says so, once for the service, not once per worker
    out = summary_of(proxy)
    assert out.startswith(f"smtp-offload {smtp_offload.__version__} started (2 workers)\n")
    assert proxy.log_path.read_text().count(" started (2 workers)\n") == 1
    if how == "admin.listen":
        assert get(f"http://127.0.0.1:{proxy.links_port}/metrics")[0] == 404
        assert f"  admin       127.0.0.1:{base}-{base + 1} (worker i: port + i): /metrics, /healthz, /readyz" in out
