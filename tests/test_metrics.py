"""GET /metrics and GET /readyz on the link server (admin.listen unset), against the proxy
process; the admin listener is tests/test_admin.py."""

from __future__ import annotations

import json
import platform
import shutil
import socket
import time

from tests.support import samples
from tests.support.http import get
from tests.support.mail import attachment, message, multipart, text
from tests.support.net import free_port
from tests.support.proc import Sink, dead_s3
from tests.support.scrape import Scrape, scrape_until


def with_attachment(size: int = 60_000) -> tuple[bytes, bytes]:
    data = samples.big_pdf(size)
    return message(multipart(text(), attachment(data, "a.pdf", "application/pdf"))), data


def test_counters_and_histograms_follow_the_messages(make_proxy, sink):
    proxy = make_proxy({"policy": {"offload_over_bytes": 10_000, "on_blocked": "reject"}})
    assert proxy.send(message(text()))[0] == 250  # clean
    msg, data = with_attachment()
    assert proxy.send(msg)[0] == 250  # one file offloaded
    exe = message(multipart(text(), attachment(samples.pe_exe(), "setup.exe", "application/octet-stream")))
    assert proxy.send(exe)[0] == 550  # policy: reject
    sink.recorder.data_reply = "451 4.3.0 Downstream busy"
    assert proxy.send(message(text()))[0] == 451  # deferred by the downstream
    sink.recorder.data_reply = None
    with proxy.client() as c:  # a relay attempt
        c.ehlo("client.test")
        c.mail("a@sender.test")
        assert c.rcpt("someone@elsewhere.test")[0] == 550

    held = proxy.client()  # one session open while scraping
    held.ehlo("client.test")
    try:
        m = scrape_until(proxy.links_port, lambda m: m("smtp_offload_smtp_sessions") == 1)
        assert m("smtp_offload_smtp_sessions") == 1
        assert m("smtp_offload_messages_in_flight") == 0
        assert m("smtp_offload_inflight_bytes") == 0
    finally:
        held.quit()

    assert m("smtp_offload_messages_total", outcome="relayed", reply_class="2xx") == 2
    assert m("smtp_offload_messages_total", outcome="rejected", reply_class="5xx") == 1
    assert m("smtp_offload_messages_total", outcome="deferred", reply_class="4xx") == 1
    assert m("smtp_offload_messages_total", outcome="failed", reply_class="4xx") == 0
    assert m("smtp_offload_attachments_total", verdict="offload") == 1
    assert m("smtp_offload_attachments_total", verdict="blocked") == 1
    assert m("smtp_offload_attachments_total", verdict="keep") == 0
    assert m("smtp_offload_offloaded_bytes_total") == len(data)
    assert m("smtp_offload_storage_put_seconds_count", result="ok") == 1
    assert m("smtp_offload_storage_put_seconds_count", result="error") == 0
    assert 0 < m("smtp_offload_storage_put_seconds_sum", result="ok") < 10
    assert m("smtp_offload_storage_put_seconds_bucket", result="ok", le="+Inf") == 1
    assert m("smtp_offload_downstream_data_seconds_count", result="2xx") == 2
    assert m("smtp_offload_downstream_data_seconds_count", result="4xx") == 1
    assert m("smtp_offload_storage_breaker_state") == 0
    assert m("smtp_offload_refusals_total", reason="relay_denied") == 1
    assert m("smtp_offload_refusals_total", reason="max_sessions") == 0
    # every family of ours has HELP text and the prefix; the process's own are there too
    ours = [f for name, f in m.families.items() if name.startswith("smtp_offload_")]
    assert not [s.name for f in m.families.values() for s in f.samples if s.name.endswith("_created")]
    assert {f.name: f.type for f in ours} == {
        "smtp_offload_messages": "counter", "smtp_offload_attachments": "counter",
        "smtp_offload_offloaded_bytes": "counter", "smtp_offload_refusals": "counter",
        "smtp_offload_arc_seal_failures": "counter",
        "smtp_offload_portal_uploads": "counter", "smtp_offload_portal_deliveries": "counter",
        "smtp_offload_quarantine": "counter",
        "smtp_offload_storage_put_seconds": "histogram", "smtp_offload_downstream_data_seconds": "histogram",
        "smtp_offload_storage_breaker_state": "gauge", "smtp_offload_smtp_sessions": "gauge",
        "smtp_offload_messages_in_flight": "gauge", "smtp_offload_inflight_bytes": "gauge",
        "smtp_offload_inflight_bytes_limit": "gauge",
        "smtp_offload_link_views": "counter", "smtp_offload_link_downloads": "counter",
        "smtp_offload_link_refusals": "counter", "smtp_offload_link_renewals": "counter",
        "smtp_offload_api_requests": "counter",
        "smtp_offload_build_info": "gauge"}
    assert all(f.documentation for f in ours)
    assert m("process_open_fds") > 0


def test_link_views_downloads_refusals_and_api_calls_are_counted(make_proxy, sink):
    import structlog

    import smtp_offload
    from smtp_offload.config import LinksConfig
    from smtp_offload.harness import files
    from smtp_offload.links import Grant, load_secrets, sign
    from tests.support.api import KEY, call, upload
    from tests.support.relayed import LINK

    proxy = make_proxy({"policy": {"offload_over_bytes": 10_000}, "links": {"api_keys": [KEY]}})
    base = f"http://127.0.0.1:{proxy.links_port}"
    msg, data = with_attachment()
    assert proxy.send(msg)[0] == 250
    (url,) = {u.decode() for u in LINK.findall(sink.messages[-1].content)}
    assert get(url)[0] == 200  # a view
    status, _h, body = get(url + "/download")
    assert (status, body) == (200, data)  # a download, streamed from the local store
    assert get(f"{base}/f/not-a-link")[0] == 403  # bad_token
    secret = load_secrets(LinksConfig(secret_file=str(proxy.tmp / "link-secret")), structlog.get_logger(),
                          create=False)[0]
    expired = sign(Grant(key="2024/01/01/0123456789abcdef0123456789abcdef/a.pdf", expires=1_700_000_000,
                         token_id="0123456789abcdef"), secret)
    assert get(f"{base}/f/{expired}")[0] == 410  # expired
    assert call(base, "GET", "/api/v1/jobs/no-such-job", key="not-a-key-0123456789abcdef")[0] == 401
    assert upload(base, files.pdf())[0] == 200

    m = Scrape(proxy.links_port)
    assert m("smtp_offload_link_views_total") == 1
    assert m("smtp_offload_link_downloads_total", via="stream") == 1
    assert m("smtp_offload_link_downloads_total", via="presigned") == 0
    assert m("smtp_offload_link_refusals_total", reason="bad_token") == 1
    assert m("smtp_offload_link_refusals_total", reason="expired") == 1
    assert m("smtp_offload_link_refusals_total", reason="revoked") == 0
    # by the route's template, never the path (ids would make a series each)
    assert m("smtp_offload_api_requests_total", route="/api/v1/jobs/{jobId}", status="401") == 1
    assert m("smtp_offload_api_requests_total", route="/api/v1/upload/attachment", status="200") == 1
    assert not [k for k in m.samples if k[0] == "smtp_offload_api_requests_total" and "no-such-job" in str(k)]
    (build,) = [k for k in m.samples if k[0] == "smtp_offload_build_info"]
    assert dict(build[1]) == {"version": smtp_offload.__version__, "python": platform.python_version()}
    assert m.samples[build] == 1
    assert not [s.name for f in m.families.values() for s in f.samples if s.name.endswith("_created")]


def test_refusals_by_reason(make_proxy, sink):
    proxy = make_proxy({"server": {"max_sessions": 1, "max_recipients": 1}})
    with proxy.client() as c:
        c.ehlo("client.test")
        with socket.create_connection(("127.0.0.1", proxy.smtp_port), timeout=10) as s:
            assert s.makefile("rb").readline().startswith(b"421 4.3.2")
        c.mail("a@sender.test")
        assert c.rcpt("a@example.com")[0] == 250
        assert c.rcpt("b@example.com")[0] == 452
    m = Scrape(proxy.links_port)
    assert m("smtp_offload_refusals_total", reason="max_sessions") == 1
    assert m("smtp_offload_refusals_total", reason="too_many_recipients") == 1


def test_downstream_refusing_connections_is_counted_at_rcpt(make_proxy):
    # The commonest outage: nothing listens downstream, every recipient gets 451 and no message
    # reaches DATA, so only this refusal tells SmtpOffloadDownstreamFailing (deploy/prometheus).
    dead = free_port()
    proxy = make_proxy(downstream_port=dead)
    key = ("smtp_offload_refusals_total", (("reason", "downstream_unavailable"),))
    assert Scrape(proxy.links_port).samples[key] == 0  # exported at 0 before the first one
    with proxy.client() as c:
        c.ehlo("client.test")
        assert c.mail("customer@sender.test")[0] == 250
        code, text = c.rcpt("support@example.com")
        assert (code, text[:5]) == (451, b"4.4.1"), text
    m = Scrape(proxy.links_port)
    assert m.samples[key] == 1
    assert m("smtp_offload_messages_total", outcome="deferred", reply_class="4xx") == 0


def test_breaker_gauge_opens_after_storage_failures(make_proxy, sink, s3server):
    proxy = make_proxy(dead_s3(breaker_failures=2, breaker_cooldown_seconds=3600))
    assert Scrape(proxy.links_port)("smtp_offload_storage_breaker_state") == 0
    assert proxy.send(with_attachment()[0])[0] == 250
    assert Scrape(proxy.links_port)("smtp_offload_storage_breaker_state") == 0  # one failure: still closed
    assert proxy.send(with_attachment()[0])[0] == 250
    m = Scrape(proxy.links_port)
    assert m("smtp_offload_storage_breaker_state") == 2  # open
    assert m("smtp_offload_storage_put_seconds_count", result="error") == 2
    assert m("smtp_offload_offloaded_bytes_total") == 0
    assert proxy.send(with_attachment()[0])[0] == 250  # fails fast: no put attempted
    m = Scrape(proxy.links_port)
    assert m("smtp_offload_storage_put_seconds_count", result="error") == 2
    assert m("smtp_offload_attachments_total", verdict="keep") == 3  # failed open, kept inline
    assert m("smtp_offload_messages_total", outcome="relayed", reply_class="2xx") == 3


def readyz(proxy) -> tuple[int, dict]:
    status, headers, body = get(f"http://127.0.0.1:{proxy.links_port}/readyz")
    assert headers["Content-Type"].startswith("application/json")
    return status, json.loads(body)


def test_readyz_200_and_cached(make_proxy, sink):
    probes = []

    async def handle_EHLO(server, session, envelope, hostname, responses):
        probes.append(hostname)
        session.host_name = hostname
        return responses

    sink.recorder.handle_EHLO = handle_EHLO  # counts the downstream probes
    proxy = make_proxy()
    at_start = len(probes)  # the connection opened at start (kept for the first session)
    for _ in range(5):
        assert readyz(proxy) == (200, {"status": "ready", "storage": "ok", "downstream": "ok"})
    assert probes[at_start:] == ["mx.test"]  # five requests, one probe: the answer is cached
    status, _, body = get(f"http://127.0.0.1:{proxy.links_port}/healthz")
    assert (status, body) == (200, b"ok")


def test_readyz_503_names_the_downstream(make_proxy):
    down = Sink()
    proxy = make_proxy(downstream_port=down.port)
    down.stop()
    status, body = readyz(proxy)
    assert status == 503
    # which dependency, and why in words an admin can act on (not a Python repr)
    assert body == {"status": "not ready", "storage": "ok", "downstream": "failed",
                    "reasons": {"downstream": f"connection refused by 127.0.0.1:{down.port}"}}
    (ev,) = proxy.events("readiness")  # logged once, when it changed (at start, or at this request)
    assert ev["ready"] is False and ev["downstream_detail"]


def test_readyz_503_names_storage(make_proxy, sink):
    proxy = make_proxy()
    shutil.rmtree(proxy.store)
    status, body = readyz(proxy)
    assert status == 503
    assert body == {"status": "not ready", "storage": "failed", "downstream": "ok",
                    "reasons": {"storage": f"storage root {proxy.store} is not a directory"}}


def test_readyz_503_names_storage_that_hangs(make_proxy, sink, s3server):
    port = free_port()
    proxy = make_proxy({"storage": {"backend": "s3"},
                        "storage.s3": {"bucket": "any-bucket", "region": "us-east-1",
                                       "endpoint_url": f"http://127.0.0.1:{port}",
                                       "connect_timeout": 1, "read_timeout": 120}})
    # now the S3 endpoint accepts connections and never answers: the probe's budget ends it
    with socket.socket() as hang:
        hang.bind(("127.0.0.1", port))
        hang.listen(16)
        started = time.monotonic()
        status, body = readyz(proxy)
        # The probe's 2 s budget, not boto's 120 s read timeout: a margin no loaded machine eats.
        assert time.monotonic() - started < 60
        assert status == 503 and body["storage"] == "timeout" and body["downstream"] == "ok"
        assert body["reasons"] == {"storage": "no answer within 2 s"}
