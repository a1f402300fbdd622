"""Faults injected for real over loopback: each ends in the reply that keeps the promise
(250 only for mail the downstream holds; otherwise the sender still has it)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support import samples
from tests.support.env import missing
from tests.support.faulty import FaultyServer
from tests.support.mail import attachment, message, multipart, text
from tests.support.net import RawSession, two_free_ports
from tests.support.proc import dead_s3
from tests.support.relayed import attachment_payloads


@pytest.fixture
def faulty():
    servers = []

    def make(mode: str) -> FaultyServer:
        s = FaultyServer(mode)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


def clean() -> bytes:
    return message(text())


def with_attachment(size: int = 60_000) -> tuple[bytes, bytes]:
    data = samples.big_pdf(size)
    return message(multipart(text(), attachment(data, "a.pdf", "application/pdf"))), data


def test_downstream_that_never_greets_costs_its_budget_then_4xx(make_proxy, faulty):
    hang = faulty("hang")
    proxy = make_proxy({"downstream": {"connect_timeout": 1, "command_timeout": 1}}, downstream_port=hang.port)
    with proxy.client() as c:
        c.ehlo("client.test")
        c.mail("a@sender.test")
        code, reply = c.rcpt("support@example.com")
        assert code == 451 and reply.startswith(b"4.4.1")
    (ev,) = proxy.events("downstream_unavailable")
    assert "Timeout" in ev["detail"] or "timeout" in ev["detail"].lower()


def test_downstream_silent_after_data_gives_4xx(make_proxy, faulty):
    hang = faulty("hang_after_data")
    proxy = make_proxy({"downstream": {"data_timeout": 1}}, downstream_port=hang.port)
    code, reply = proxy.send(clean())
    assert code == 451 and reply.startswith(b"4.4.1")
    assert proxy.events("message")[0]["outcome"] == "deferred"


def test_downstream_dropping_mid_data_gives_4xx(make_proxy, faulty):
    drop = faulty("drop_mid_data")
    proxy = make_proxy(downstream_port=drop.port)
    code, reply = proxy.send(with_attachment()[0])
    assert code == 451 and reply.startswith(b"4.4.1")


def test_hanging_storage_costs_its_budget_then_fails_open(make_proxy, sink, faulty, s3server):
    hang = faulty("hang")
    proxy = make_proxy({"storage": {"backend": "s3"},
                        "storage.s3": {"bucket": "any-bucket", "endpoint_url": f"http://127.0.0.1:{hang.port}",
                                       "region": "us-east-1", "read_timeout": 30},
                        "policy": {"offload_over_bytes": 10_000, "storage_timeout": 1}})
    msg, data = with_attachment()
    code, _ = proxy.send(msg)
    assert code == 250
    assert attachment_payloads(sink.messages[0].content) == {"a.pdf": data}
    (ev,) = proxy.events("offload_failed")
    assert ev["error"] == "timeout"


def test_storage_breaker_opens_and_fails_fast(make_proxy, sink, s3server):
    proxy = make_proxy(dead_s3(breaker_failures=2, breaker_cooldown_seconds=3600))
    for _ in range(4):
        assert proxy.send(with_attachment()[0])[0] == 250
    errors = [e["error"] for e in proxy.events("offload_failed")]
    assert errors[2:] == ["circuit_open", "circuit_open"] and "circuit_open" not in errors[:2]
    assert [e["state"] for e in proxy.events("circuit_breaker")] == ["open"]
    assert len(sink.messages) == 4
    # Every event of a message carries its queue_id and client, bound once (structlog contextvars).
    messages = proxy.events("message")
    ids = {m["queue_id"] for m in messages}
    assert len(ids) == 4 and {m["client"] for m in messages} == {"127.0.0.1"}
    for name in ("offload_failed", "circuit_breaker", "attachment"):
        events = proxy.events(name)
        assert events and all(e["queue_id"] in ids and e["client"] == "127.0.0.1" for e in events), events


def test_session_limit_answers_421(make_proxy, sink):
    proxy = make_proxy({"server": {"max_sessions": 2}})
    held = [proxy.client() for _ in range(2)]
    try:
        for c in held:
            c.ehlo("client.test")
        with socket.create_connection(("127.0.0.1", proxy.smtp_port), timeout=10) as s:
            assert s.makefile("rb").readline().startswith(b"421 4.3.2")
    finally:
        for c in held:
            c.quit()
    # capacity is back once sessions end
    assert proxy.send(clean())[0] == 250
    assert proxy.events("session_refused")


def test_inflight_byte_budget_answers_451_to_data(make_proxy, sink):
    proxy = make_proxy({"server": {"max_inflight_bytes": 1_000_000}})
    holder = RawSession(proxy.smtp_port)
    # this session holds the whole budget while its DATA arrives
    assert holder.start_data(mail=b"MAIL FROM:<a@sender.test> SIZE=1000000").startswith(b"354")
    try:
        with proxy.client() as c:
            c.ehlo("client.test")
            c.mail("x@sender.test")
            c.rcpt("support@example.com")
            code, reply = c.docmd("DATA")
            assert code == 451 and reply.startswith(b"4.3.2")
    finally:
        holder.send(clean() + b".\r\n")
        assert holder.reply().startswith(b"250")
        holder.close()
    assert proxy.send(clean())[0] == 250


def test_data_deadline_closes_a_trickling_client(make_proxy, sink):
    proxy = make_proxy({"server": {"data_timeout": 1, "idle_timeout": 30}})
    with RawSession(proxy.smtp_port) as s:
        assert s.start_data().startswith(b"354")
        s.send(b"Subject: slow\r\n")
        assert s.reply().startswith(b"421 4.4.2")
    assert sink.messages == []


def test_sigterm_lets_the_message_in_flight_finish(make_proxy, sink):
    proxy = make_proxy()
    entered, release = threading.Event(), threading.Event()

    async def slow_data(server, session, envelope):
        entered.set()
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 30)
        sink.recorder.messages.append(envelope)
        return "250 2.0.0 Ok"

    sink.recorder.handle_DATA = slow_data
    result = {}

    def send() -> None:
        c = proxy.client()
        c.ehlo("busy.test")
        c.mail("a@sender.test")
        c.rcpt("support@example.com")
        result["reply"] = c.data(clean())
        result["after"] = c.getreply()  # then the drain's 421 and the connection closes
        c.close()

    t = threading.Thread(target=send)
    t.start()
    idle = proxy.client()
    idle.ehlo("idle.test")
    assert entered.wait(20)  # the proxy is relaying: its DATA is in flight
    proxy.proc.send_signal(15)
    _wait_for(lambda: proxy.events("draining"))
    with pytest.raises(smtplib.SMTPServerDisconnected):
        code, _ = idle.docmd("NOOP")  # the idle session was told 421 and closed
        assert code == 421
        idle.docmd("NOOP")
    with socket.socket() as s:  # no new connections
        assert s.connect_ex(("127.0.0.1", proxy.smtp_port)) != 0
    release.set()
    t.join(30)
    assert result["reply"][0] == 250 and result["after"][0] == 421
    assert proxy.proc.wait(30) == 0
    assert len(sink.messages) == 1


def _wait_for(cond, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_sighup_is_logged_not_fatal(proxy, sink):
    proxy.proc.send_signal(1)
    _wait_for(lambda: proxy.events("sighup_ignored"))
    assert proxy.send(clean())[0] == 250


def test_downstream_connections_are_pooled_and_stale_ones_replaced(make_proxy):
    rec = FaultyServer("record")
    try:
        proxy = make_proxy(downstream_port=rec.port)
        for _ in range(3):  # three client sessions, one after the other
            assert proxy.send(clean())[0] == 250
        assert rec.connections == 1 and len(rec.data_blocks) == 3
        for c in rec._conns:  # the downstream drops its idle connections
            c.shutdown(socket.SHUT_RDWR)
        time.sleep(0.2)
        assert proxy.send(clean())[0] == 250  # the stale pooled connection is replaced, not reported
        assert rec.connections == 2 and len(rec.data_blocks) == 4
    finally:
        rec.stop()


def test_workers_share_the_ports_and_drain_together(make_proxy, sink):
    proxy = make_proxy({"server": {"workers": 2}})
    (ev,) = [e for e in proxy.events("workers_started")]
    assert len(ev["pids"]) == 2
    _wait_for(lambda: len(proxy.events("started")) == 2)  # both listen before the load starts
    for i in range(20):
        assert proxy.send(message(text(f"message {i}\r\n")))[0] == 250
    handled_by = {e.get("worker") for e in proxy.events("message")}
    assert handled_by == {0, 1} and len(sink.messages) == 20  # the kernel spread them (p(all on one) ~ 2e-6)
    # a link minted by one worker is served by any: they share the secret file
    secret = (proxy.tmp / "link-secret").read_text()
    assert len(proxy.events("link_secret_generated")) == 1 and secret
    assert proxy.stop() == 0


def test_workers_write_whole_log_lines(make_proxy, sink):
    """Both workers write JSON lines to one stdout at the same moments: every line must still be
    one whole event (a line written in two pieces interleaves with the other worker's)."""
    proxy = make_proxy({"server": {"workers": 2}})
    _wait_for(lambda: len(proxy.events("started")) == 2)
    url = f"http://127.0.0.1:{proxy.links_port}/f/not-a-token"  # each view is one audit line

    def views(n: int) -> None:
        for _ in range(n):
            try:
                urllib.request.urlopen(url, timeout=30)
            except urllib.error.HTTPError as e:
                assert e.code == 403

    threads = [threading.Thread(target=views, args=(150,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    _wait_for(lambda: len(proxy.events("link_view")) >= 1200 or _torn_lines(proxy))
    assert _torn_lines(proxy) == []
    logged = proxy.events("link_view")
    assert len(logged) == 1200 and {e["worker"] for e in logged} == {0, 1}


def _torn_lines(proxy) -> list[bytes]:
    out = []
    for line in proxy.log_path.read_bytes().splitlines():
        try:
            json.loads(line)
        except ValueError:
            out.append(line)
    return out


def _pid_namespace() -> tuple[str, ...]:
    """A command that runs the proxy as pid 1 of a new pid namespace, as a container runs its
    entry point."""
    tool = shutil.which("unshare")
    if tool is None:
        missing("unshare is not installed (Debian package util-linux)")
    for cmd in ((tool, "--pid", "--fork", "--kill-child"),
                (tool, "--user", "--map-root-user", "--pid", "--fork", "--kill-child")):
        if subprocess.run([*cmd, "true"], capture_output=True, timeout=30).returncode == 0:
            return cmd
    missing("no pid namespace can be made here (unshare --pid is not permitted)")


def test_workers_run_under_a_supervisor_that_is_pid_1(make_proxy, sink):
    """A worker checked "is my parent gone?" as getppid() == 1: under a supervisor that is pid 1
    itself, every worker exited at start and was respawned, once a second, forever."""
    proxy = make_proxy({"server": {"workers": 2}}, wrapper=_pid_namespace())
    (child,) = Path(f"/proc/{proxy.proc.pid}/task/{proxy.proc.pid}/children").read_text().split()
    nspid = next(ln for ln in Path(f"/proc/{child}/status").read_text().splitlines() if ln.startswith("NSpid:"))
    assert nspid.split()[-1] == "1"  # the premise: the proxy's main process is pid 1 in its namespace
    _wait_for(lambda: len(proxy.events("started")) == 2)
    for i in range(6):
        assert proxy.send(message(text(f"message {i}\r\n")))[0] == 250
    assert proxy.events("worker_died") == []
    assert len(proxy.events("started")) == 2
    os.kill(int(child), signal.SIGTERM)  # unshare does not pass signals on; pid 1 has a handler
    assert proxy.proc.wait(30) == 0 and len(proxy.events("stopped")) == 2


def test_workers_create_a_new_local_store_without_a_race(make_proxy, sink, tmp_path):
    """Both workers used to create the store directory themselves, and the one that came
    second died of FileExistsError (a deep path makes the window wide: it always did)."""
    deep = tmp_path / "/".join(["d"] * 150) / "store"
    proxy = make_proxy({"server": {"workers": 2}, "storage.local": {"path": str(deep)}})
    _wait_for(lambda: len(proxy.events("started")) == 2)
    assert proxy.events("worker_died") == [] and proxy.events("worker_failed") == []
    assert deep.is_dir() and deep.stat().st_mode & 0o777 == 0o700
    assert proxy.stop() == 0


def test_a_worker_that_fails_says_why_and_sigterm_ends_its_restarts(make_proxy, sink):
    """A worker that cannot start logs its exception (os._exit used to end it without a word),
    and a SIGTERM during the pause before its restart stops the proxy (a worker forked after
    it never got the signal, and the proxy ran on)."""
    base = two_free_ports()
    with socket.socket() as taken:  # worker 1's own metrics port is in use: it cannot start
        taken.bind(("127.0.0.1", base + 1))
        taken.listen(1)
        proxy = make_proxy({"server": {"workers": 2}, "links": {"worker_port_base": base}})
        _wait_for(lambda: proxy.events("worker_died"))  # logged right before the pause
    failed = proxy.events("worker_failed")[0]
    assert failed["worker"] == 1 and failed["level"] == "error"
    assert "Traceback" in failed["exception"] and "in use" in failed["exception"]
    # The port is free now, so a worker 1 forked after the SIGTERM would start and serve on.
    proxy.proc.send_signal(signal.SIGTERM)
    assert proxy.proc.wait(30) == 0


