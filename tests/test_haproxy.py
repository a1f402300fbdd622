"""PROXY protocol: the real client address behind a TCP load balancer.

Two proxy instances behind a real HAProxy running the shipped deploy/haproxy/haproxy.cfg
(addresses and ports changed; TCP mode, `send-proxy-v2`, least connections, /readyz health
checks) sharing the link secret and the store: each logs and records the client's address, not
HAProxy's, and a link minted by one instance is served by the other. The PROXY header is
also sent by hand (no HAProxy needed) for the refusal and STARTTLS cases.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import smtplib
import socket
import ssl
import struct
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import samples
from tests.support.env import ROOT, missing
from tests.support.http import get
from tests.support.mail import attachment, message, multipart, text
from tests.support.net import free_port, wait_port
from tests.support.proc import stop_process
from tests.support.relayed import LINK, attachment_payloads

CLIENT = "127.0.0.2"  # the client's own source address; HAProxy connects from 127.0.0.1
SECRET = "haproxy-test-shared-link-secret-0123456789"


class ProxiedSMTP(smtplib.SMTP):
    """smtplib that sends a PROXY header first, as a load balancer would."""

    header = b""

    def _get_socket(self, host, port, timeout):
        sock = super()._get_socket(host, port, timeout)
        sock.sendall(self.header)
        return sock


def proxied(port: int, header: bytes) -> ProxiedSMTP:
    ProxiedSMTP.header = header
    return ProxiedSMTP("127.0.0.1", port, timeout=30)


def received_ip(content: bytes) -> str:
    m = re.search(rb"^Received: from \S+ \(\[([^\]]+)\]\)", content, re.M)
    assert m, content[:300]
    return m.group(1).decode()


def queue_id(content: bytes) -> str:
    m = re.search(rb"\(smtp-offload\) with \S+ id ([0-9A-F]+)", content)
    assert m
    return m.group(1).decode()


# -- the header by hand ---------------------------------------------------------


def test_proxy_header_names_the_client(make_proxy, sink):
    proxy = make_proxy({"server": {"proxy_protocol": True}})
    with proxied(proxy.smtp_port, b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 25\r\n") as c:
        c.ehlo("client.test")
        c.mail("a@sender.test")
        assert c.rcpt("x@elsewhere.test")[0] == 550
        assert c.rcpt("support@example.com")[0] == 250
        assert c.data(message(text()))[0] == 250
    assert received_ip(sink.messages[0].content) == "192.0.2.7"
    assert proxy.events("message")[0]["client"] == "192.0.2.7"
    assert proxy.events("rcpt_refused")[0]["client"] == "192.0.2.7"


def test_proxy_v2_header_is_accepted(make_proxy, sink):
    proxy = make_proxy({"server": {"proxy_protocol": True}})
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    addrs = socket.inet_pton(socket.AF_INET6, "2001:db8::5") + socket.inet_pton(socket.AF_INET6, "2001:db8::1") + \
        struct.pack("!HH", 40000, 25)
    header = sig + bytes([0x21, 0x21]) + struct.pack("!H", len(addrs)) + addrs  # v2 PROXY, TCP over IPv6
    with proxied(proxy.smtp_port, header) as c:
        assert c.sendmail("a@sender.test", ["support@example.com"], message(text())) == {}
    assert received_ip(sink.messages[0].content) == "2001:db8::5"


@pytest.mark.parametrize("first", [b"EHLO client.test\r\n", b"PROXY TCP4 not-an-ip 127.0.0.1 1 2\r\n", b""])
def test_connection_without_a_valid_header_is_closed(make_proxy, sink, first):
    proxy = make_proxy({"server": {"proxy_protocol": True, "proxy_protocol_timeout": 1}})
    with socket.create_connection(("127.0.0.1", proxy.smtp_port), timeout=10) as s:
        s.sendall(first)
        started = time.monotonic()
        assert s.recv(1000) == b""  # closed, and no greeting was ever sent
        assert time.monotonic() - started < 5
    # (the harness's own port probe at start is a connection without a header too: info)
    level = "warning" if first else "info"
    deadline = time.monotonic() + 5
    while not [e for e in proxy.events("proxy_refused") if e["level"] == level] and time.monotonic() < deadline:
        time.sleep(0.05)
    events = proxy.events("proxy_refused")
    assert all(e["peer"] == "127.0.0.1" for e in events)
    assert len([e for e in events if e["level"] == "warning"]) == (1 if first else 0)
    assert [e for e in events if e["level"] == level]
    assert sink.messages == []


def test_client_address_survives_starttls(make_proxy, sink, cert):
    proxy = make_proxy({"server": {"proxy_protocol": True, "tls_cert": cert[0], "tls_key": cert[1]}})
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with proxied(proxy.smtp_port, b"PROXY TCP4 198.51.100.9 127.0.0.1 40000 25\r\n") as c:
        c.ehlo("client.test")
        c.starttls(context=ctx)
        c.ehlo("client.test")
        assert c.sendmail("a@sender.test", ["support@example.com"], message(text())) == {}
    content = sink.messages[0].content
    assert received_ip(content) == "198.51.100.9" and b"with ESMTPS id" in content
    assert proxy.events("message")[0]["client"] == "198.51.100.9"


# -- a real HAProxy --------------------------------------------------------------


SHIPPED = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
SERVER_LINE = re.compile(r"^    server (mx\d+) 10\.0\.0\.\d+:2525 check port 8026$", re.M)


def instance(make_proxy, overrides: dict, **kw) -> tuple:
    """(proxy, admin port): a proxy with its admin listener (/readyz, as HAProxy checks it in
    production) on a port of its own."""
    admin = free_port()
    return make_proxy({**overrides, "admin": {"listen": f"127.0.0.1:{admin}"}}, **kw), admin


def render(cfg: str, *, port: int, backends: list[tuple[int, int]], stats: Path) -> str:
    """The shipped file with test addresses: the frontend on `port`, server i at 127.0.0.1 with
    (SMTP port, check port) = backends[i], servers beyond them dropped, the stats socket in
    `stats`; chroot, user and group dropped (they need root). Every replaced line must be there,
    so the test fails rather than silently runs something else when the file changes."""
    lines = SERVER_LINE.findall(cfg)
    assert len(lines) >= len(backends), lines
    it = iter(backends)

    def server(m: re.Match) -> str:
        smtp, check = next(it, (None, None))
        return f"    server {m.group(1)} 127.0.0.1:{smtp} check port {check}" if smtp else ""

    cfg = SERVER_LINE.sub(server, cfg)
    for old, new in [("    bind :25\n", f"    bind 127.0.0.1:{port}\n"),
                     ("stats socket /run/haproxy/admin.sock ", f"stats socket {stats} "),
                     ("    chroot /var/lib/haproxy\n", ""), ("    user haproxy\n", ""),
                     ("    group haproxy\n", "")]:
        assert cfg.count(old) == 1, old
        cfg = cfg.replace(old, new)
    return cfg


def server_states(stats: Path) -> dict[str, str]:
    """{server name: UP|DOWN|...} of the backend, from HAProxy's stats socket."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(stats))
        s.sendall(b"show stat\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    rows = csv.DictReader(io.StringIO(out.decode().lstrip("# ")))
    return {r["svname"]: r["status"] for r in rows if r["pxname"] == "smtp_offload"
            and r["svname"] not in ("BACKEND", "FRONTEND")}


@pytest.fixture
def haproxy(tmp_path):
    """start([(proxy, admin port), ...]) -> (port, stats socket): the shipped
    deploy/haproxy/haproxy.cfg in front of the proxies, checking each one's /readyz."""
    exe = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)
    if exe is None:
        missing("haproxy not installed (scripts/system-deps installs it)")
    started = []

    def start(instances: list[tuple]) -> tuple[int, Path]:
        port, stats = free_port(), tmp_path / "haproxy.sock"
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(render(SHIPPED.read_text(), port=port, stats=stats,
                              backends=[(p.smtp_port, admin) for p, admin in instances]))
        checked = subprocess.run([exe, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        log = open(tmp_path / "haproxy.log", "wb")
        proc = subprocess.Popen([exe, "-f", str(cfg), "-db"], stdout=log, stderr=subprocess.STDOUT)
        started.append((proc, log))
        try:
            wait_port(port, proc)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}: {(tmp_path / 'haproxy.log').read_text(errors='replace')}") from None
        return port, stats

    yield start
    for proc, log in started:
        stop_process(proc, 10)
        log.close()


def test_shipped_config_is_valid_as_is():
    exe = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)
    if exe is None:
        missing("haproxy not installed (scripts/system-deps installs it)")
    checked = subprocess.run([exe, "-c", "-f", str(SHIPPED)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and "valid" in checked.stdout + checked.stderr, checked.stdout + checked.stderr


def test_an_instance_that_is_not_ready_gets_no_mail(make_proxy, sink, haproxy):
    """/readyz is the health check: an instance whose downstream is down is taken out, and
    every session goes to the ready one."""
    overrides = {"server": {"proxy_protocol": True}}
    (ready, ready_admin), (unready, unready_admin) = (instance(make_proxy, overrides),
                                                      instance(make_proxy, overrides, downstream_port=free_port()))
    front, stats = haproxy([(ready, ready_admin), (unready, unready_admin)])
    deadline = time.monotonic() + 30
    while (states := server_states(stats)) != {"mx1": "UP", "mx2": "DOWN"}:
        assert time.monotonic() < deadline, states
        time.sleep(0.2)
    for _ in range(4):
        with smtplib.SMTP("127.0.0.1", front, timeout=30, source_address=(CLIENT, 0)) as c:
            assert c.sendmail("a@sender.test", ["support@example.com"], message(text())) == {}
    assert len(sink.messages) == 4 and len(ready.events("message")) == 4
    assert unready.events("message") == []


def test_two_instances_behind_haproxy(make_proxy, sink, haproxy, tmp_path):
    shared = tmp_path / "shared-store"
    overrides = {"server": {"proxy_protocol": True}, "links": {"secret": SECRET},
                 "storage.local": {"path": str(shared)}, "policy": {"offload_over_bytes": 10_000}}
    (a, a_admin), (b, b_admin) = instance(make_proxy, overrides), instance(make_proxy, overrides)
    front, _ = haproxy([(a, a_admin), (b, b_admin)])

    files = {}
    for i in range(6):
        data = samples.big_pdf(30_000 + 1000 * i)
        files[f"file{i}.pdf"] = data
        msg = message(multipart(text(), attachment(data, f"file{i}.pdf", "application/pdf")))
        with smtplib.SMTP("127.0.0.1", front, timeout=30, source_address=(CLIENT, 0)) as c:
            assert c.sendmail("a@sender.test", ["support@example.com"], msg) == {}

    # round robin: both instances handled messages; each logged the real client, not HAProxy.
    # Not exactly 3 each: the readiness probe of HAProxy's port may or may not take a turn
    # of the round robin (it closes before HAProxy reaches a server), and HAProxy 2.6 then
    # sometimes gives two connections in a row to one server.
    handled = {"a": a.events("message"), "b": b.events("message")}
    assert len(handled["a"]) + len(handled["b"]) == 6 and handled["a"] and handled["b"], handled
    assert all(ev["client"] == CLIENT and ev["outcome"] == "relayed" for evs in handled.values() for ev in evs)
    assert len(sink.messages) == 6
    assert all(received_ip(m.content) == CLIENT for m in sink.messages)

    # a link minted by A is served by B: same secret, same store
    a_ids = {ev["queue_id"] for ev in handled["a"]}
    from_a = [m for m in sink.messages if queue_id(m.content) in a_ids]
    assert len(from_a) == len(a_ids)
    content = from_a[0].content
    assert attachment_payloads(content) == {}  # offloaded
    (url,) = {u.decode() for u in LINK.findall(content)}
    assert url.startswith(f"http://127.0.0.1:{a.links_port}/f/")
    token = url.rsplit("/f/", 1)[1]
    on_b = f"http://127.0.0.1:{b.links_port}/f/{token}"
    status, _, page = get(on_b)
    assert status == 200
    name = next(n for n in files if n.encode() in page)
    status, headers, body = get(on_b + "/download")
    assert status == 200 and body == files[name]
    deadline = time.monotonic() + 5  # the audit event is written just after the last byte
    while not b.events("link_download") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [e["status"] for e in b.events("link_download")] == [200]
    assert a.events("link_download") == []
