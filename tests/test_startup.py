"""Start-up as a person sees it: the summary on stderr (where it listens, whether the downstream
answered, what to do when it did not), and a port in use or a bad address ending the start with
one line that names the key. Real processes over loopback.

The summary (log.summary, on by default) is printed on stderr beside the JSON log lines; the test
harness turns it off unless a test is about it (tests/support/proc.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.support.http import get
from tests.support.net import free_port, two_free_ports
from tests.support.proc import Proxy, summary_of


def test_summary_says_the_downstream_did_not_answer_and_what_to_do(make_proxy):
    dead = free_port()  # nothing listens there: as after a fresh install, before the MTA runs
    proxy = make_proxy({"log": {"summary": True}}, downstream_port=dead)
    out = summary_of(proxy)
    refused = f"connection refused by 127.0.0.1:{dead}"
    assert f"  SMTP        127.0.0.1:{proxy.smtp_port} for example.com\n" in out
    assert f"  downstream  127.0.0.1:{dead}: did not answer: {refused}\n" in out
    assert f"  store       {proxy.store.resolve()}: answered\n" in out
    assert f"  links       http://127.0.0.1:{proxy.links_port}/f/... served on 127.0.0.1:{proxy.links_port}\n" in out
    assert f"  admin       on 127.0.0.1:{proxy.links_port} (admin.listen is not set)" in out
    assert (f"  Nothing answers on 127.0.0.1:{dead}: start your MTA there or set downstream.host/port; "
            "until then messages get 451 and senders retry.\n") in out
    assert len(out.splitlines()) <= 8 and "Traceback" not in out
    # /readyz says the same, in the same words
    status, _h, body = get(f"http://127.0.0.1:{proxy.links_port}/readyz")
    assert status == 503 and json.loads(body)["reasons"] == {"downstream": refused}
    # and what it promises: the sender is told to retry
    with proxy.client() as c:
        c.ehlo("client.test")
        assert c.mail("customer@sender.test")[0] == 250
        code, _text = c.rcpt("support@example.com")
        assert code == 451


def test_summary_says_the_downstream_answered(make_proxy, sink):
    admin = free_port()
    proxy = make_proxy({"admin": {"listen": f"127.0.0.1:{admin}"}, "log": {"summary": True, "format": "console"}})
    out = summary_of(proxy)
    assert f"  downstream  127.0.0.1:{sink.port}: answered\n" in out
    assert f"  admin       127.0.0.1:{admin}: /metrics, /healthz, /readyz\n" in out
    assert "Nothing answers" not in out and "did not answer" not in out


def serve(config: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SMTP_OFFLOAD_LINK_SECRET"}
    return subprocess.run([sys.executable, "-m", "smtp_offload", "serve", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, env=env, cwd=config.parent)


def test_a_port_in_use_or_a_bad_address_ends_the_start_with_one_line(make_proxy, sink, tmp_path):
    admin = free_port()
    first = make_proxy({"admin": {"listen": f"127.0.0.1:{admin}"}})
    smtp, links = f"127.0.0.1:{first.smtp_port}", f"127.0.0.1:{first.links_port}"
    base = two_free_ports()
    with socket.socket() as taken:  # something else holds worker 1's admin port
        taken.bind(("127.0.0.1", base + 1))
        taken.listen(1)
        cases = [
            ({}, f"server.listen {smtp}: address already in use"),  # the same config again
            ({"links": {"listen": links}}, f"links.listen {links}: address already in use"),
            ({"admin": {"listen": f"127.0.0.1:{admin}"}}, f"admin.listen 127.0.0.1:{admin}: address already in use"),
            ({"server": {"workers": 2}, "admin": {"listen": f"127.0.0.1:{base}"}},
             f"admin.listen 127.0.0.1:{base + 1} (worker 1: port + 1): address already in use"),
        ]
        dead = free_port()
        cases.append(({"server": {"listen": f"192.0.2.1:{dead}"}},
                      f"server.listen 192.0.2.1:{dead}: not an address of this machine"))
        results = []
        for i, (overrides, _line) in enumerate(cases):
            d = tmp_path / f"second-{i}"
            d.mkdir()
            config = first.config if i == 0 else Proxy(d, sink.port, overrides).config
            results.append(serve(config))
    for (overrides, line), proc in zip(cases, results):
        assert (proc.returncode, proc.stderr) == (1, f"smtp-offload: cannot start: {line}\n"), (overrides, proc.stdout)
        assert "Traceback" not in proc.stdout
    # the first instance never noticed
    assert first.send(b"Subject: still here\r\n\r\nhello\r\n")[0] == 250
    assert get(f"http://127.0.0.1:{admin}/readyz")[0] == 200
