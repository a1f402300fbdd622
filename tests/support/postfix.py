"""Helpers for tests/test_postfix.py: a private Postfix instance as the *sending* MTA, an S3
endpoint that hangs on uploads, and the proxy started on fixed ports (so it can be restarted
where Postfix's relayhost points)."""

from __future__ import annotations

import collections
import email.utils
import json
import os
import re
import shutil
import signal
import smtplib
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, TypeVar

from tests.support.mail import attachment, multipart, text
from tests.support.net import free_port, wait_port
from tests.support.proc import Proxy

POSTFIX = Path("/usr/sbin/postfix")
T = TypeVar("T")


def postfix_unavailable() -> str | None:
    """Why a private Postfix instance cannot run here, or None."""
    if not POSTFIX.exists():
        return f"Postfix is not installed ({POSTFIX}); scripts/system-deps installs the Debian package"
    if os.geteuid() != 0:
        return "a private Postfix instance must be started as root (its daemons drop to the postfix user)"
    return None


def wait_for(check: Callable[[], T], what: str, timeout: float = 60.0, interval: float = 0.2,
             diagnose: Callable[[], str] | None = None) -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}"
                                 + (f"\n{diagnose()}" if diagnose else ""))
        time.sleep(interval)


# --- Postfix ------------------------------------------------------------------

# The services a relaying instance needs (no chroot): one table, the benchmark's Postfix peer uses it too.
from bench.postfix import MASTER_CF  # noqa: E402

# `<queue id>: to=<rcpt>, relay=..., ..., status=sent (250 2.0.0 Ok: queued as X)`
_STATUS = re.compile(r": (?P<qid>[0-9A-F]{6,}): to=<(?P<rcpt>[^>]*)>, .*?status=(?P<status>\w+) \((?P<text>.*)\)$")
_MESSAGE_ID = re.compile(r": (?P<qid>[0-9A-F]{6,}): message-id=(?P<mid><[^>]*>)$")


class Postfix:
    """A private Postfix instance: own config, queue and data directories, own smtpd port,
    relaying everything to `[127.0.0.1]:relay_port` and logging to a file (no syslog)."""

    def __init__(self, relay_port: int):
        # Not under pytest's tmp_path: that is 0700 and deep, while Postfix's daemons run as the
        # postfix user and its UNIX sockets need short paths (108 bytes).
        self.root = Path(tempfile.mkdtemp(prefix="smtp-offload-postfix-"))
        self.root.chmod(0o755)
        self.conf, self.queue_dir, self.data_dir = self.root / "conf", self.root / "queue", self.root / "data"
        self.maillog = self.root / "maillog"
        self.smtp_port = free_port()
        self.relay_port = relay_port
        self.started = False
        for d in (self.conf, self.queue_dir):
            d.mkdir(mode=0o755)
        (self.conf / "main.cf").write_text(self.main_cf())
        (self.conf / "master.cf").write_text(MASTER_CF.format(smtp_port=self.smtp_port))

    def main_cf(self) -> str:
        settings = {
            "compatibility_level": "3.6",
            "config_directory": self.conf,
            "queue_directory": self.queue_dir,
            "data_directory": self.data_dir,
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "syslog_name": f"smtp-offload-test-{self.root.name}",
            "maillog_file": self.maillog,
            "maillog_file_prefixes": self.root,  # the default allows only /var and /dev/stdout
            "myhostname": "postfix.sender.test",  # never the proxy's name: that would be a mail loop
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "relay_domains": "example.com",
            "relayhost": f"[127.0.0.1]:{self.relay_port}",
            "alias_maps": "",
            "alias_database": "",
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            # Retry fast: Postfix's minimum for all three is one second.
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "queue_run_delay": "1s",
            "smtp_connect_timeout": "5s",
            "smtp_helo_timeout": "30s",
            # Longer than any wait in the tests: a SIGKILLed proxy must be noticed by the lost
            # connection, not by a timeout.
            "smtp_data_done_timeout": "120s",
            # A new connection per delivery: a cached session to a killed proxy would only blur
            # which delivery attempt met which proxy.
            "smtp_connection_cache_on_demand": "no",
            "smtp_connection_cache_destinations": "",
            # Mail that cannot be delivered must stay queued and visible, never bounce.
            "soft_bounce": "yes",
        }
        return "".join(f"{k} = {v}\n" for k, v in settings.items())

    # -- commands -------------------------------------------------------------
    def run(self, *args: str, command: str = "postfix", check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([command, "-c", str(self.conf), *args], capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{command} {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}\n"
                               f"{self.log_tail()}")
        return proc

    def start(self) -> "Postfix":
        self.run("check")  # creates the queue subdirectories with the ownership Postfix wants
        self.run("start")
        self.started = True
        wait_port(self.smtp_port, timeout=30)
        return self

    def master_pid(self) -> int | None:
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """Stop the instance, whatever state it is in, and remove its files (kept when the
        environment sets SMTP_OFFLOAD_KEEP_POSTFIX)."""
        if self.started:
            pid = self.master_pid()
            if self.run("stop", check=False).returncode != 0:
                self.run("abort", check=False)
            if pid is not None:
                try:
                    wait_for(lambda: not _alive(pid), "the Postfix master to exit", timeout=20)
                except AssertionError:
                    os.kill(pid, signal.SIGKILL)
            self.started = False
        if os.environ.get("SMTP_OFFLOAD_KEEP_POSTFIX"):  # for debugging: keep config, queue and maillog
            print(f"Postfix instance kept in {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    def flush(self) -> None:
        self.run("-f", command="postqueue")

    def delete_all(self) -> None:
        self.run("-d", "ALL", command="postsuper")

    def queue(self) -> list[dict]:
        """`postqueue -j`: one dict per queued message (queue_id, queue_name, recipients, ...)."""
        out = self.run("-j", command="postqueue").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    # -- mail -----------------------------------------------------------------
    def submit(self, message: bytes, sender: str = "customer@sender.test",
               rcpt: str = "support@example.com") -> None:
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30) as c:
            c.ehlo("client.sender.test")
            refused = c.sendmail(sender, [rcpt], message)
            assert not refused, refused

    # -- log ------------------------------------------------------------------
    def log(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "Postfix log (tail):\n" + "\n".join(self.log().splitlines()[-lines:])

    def queue_ids(self) -> dict[str, str]:
        """Message-ID -> Postfix queue id, from cleanup's log lines."""
        return {m["mid"]: m["qid"] for m in map(_MESSAGE_ID.search, self.log().splitlines()) if m}

    def deliveries(self) -> dict[str, list[tuple[str, str]]]:
        """Postfix queue id -> every delivery attempt as (status, text), in order."""
        out: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
        for m in map(_STATUS.search, self.log().splitlines()):
            if m:
                out[m["qid"]].append((m["status"], m["text"]))
        return out

    def diagnose(self) -> str:
        try:
            queue = json.dumps(self.queue(), indent=1)
        except Exception as exc:  # noqa: BLE001 - diagnostics only
            queue = repr(exc)
        return f"{self.log_tail()}\nPostfix queue: {queue}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --- an S3 endpoint that hangs -------------------------------------------------------

class _HangingS3Handler(BaseHTTPRequestHandler):
    """Answers the proxy's start-up probe (HEAD bucket, PUT/DELETE of `.probe/` keys) like S3,
    so the proxy starts normally, then reads every upload to the end and never answers it."""

    protocol_version = "HTTP/1.1"
    server: "_HangingHTTPServer"

    def log_message(self, format, *args):  # noqa: A002 - quiet
        pass

    def _probe(self) -> bool:
        return "/.probe/" in self.path

    def handle_expect_100(self):
        if self.command == "PUT" and not self._probe():
            return True  # not even "100 Continue": botocore sends the body after its 1 s wait
        return super().handle_expect_100()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _answer(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in {"x-amz-request-id": "HANG", "Content-Length": "0", **(headers or {})}.items():
            self.send_header(k, v)
        self.end_headers()

    def do_HEAD(self):
        self._answer(200, {"x-amz-bucket-region": "us-east-1"})

    def do_DELETE(self):
        self._answer(204)

    def do_PUT(self):
        body = self._read_body()
        if self._probe():
            self._answer(200, {"ETag": '"d41d8cd98f00b204e9800998ecf8427e"'})
            return
        self.server.record(self.path, len(body))
        self.server.release.wait()  # the hang: no status line, ever (until the test is over)
        self.close_connection = True

    do_GET = do_POST = do_PUT


class _HangingHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.release = threading.Event()
        self.uploads: list[tuple[str, int]] = []  # (path, bytes received) of each hanging request
        self._lock = threading.Lock()

    def record(self, path: str, size: int) -> None:
        with self._lock:
            self.uploads.append((path, size))


class HangingS3:
    def __init__(self):
        self.server = _HangingHTTPServer(("127.0.0.1", 0), _HangingS3Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    @property
    def uploads(self) -> list[tuple[str, int]]:
        """The requests that sent a body (object writes); the proxy's listings (portal and
        quarantine sweeps) hang here too, and are not uploads."""
        with self.server._lock:
            return [u for u in self.server.uploads if u[1] > 0]

    def close(self) -> None:
        self.server.release.set()
        self.server.shutdown()
        self.server.server_close()


# --- the proxy on fixed ports ------------------------------------------------------

def proxy_on_ports(tmp: Path, downstream_port: int, smtp_port: int, links_port: int,
                   overrides: dict[str, dict] | None = None, env: dict[str, str] | None = None) -> Proxy:
    """A Proxy (not yet started) listening on the given ports, so that a restarted proxy is
    found where the first one was (Postfix's relayhost, the links already in mails)."""
    merged = {k: dict(v) for k, v in (overrides or {}).items()}
    merged.setdefault("server", {})["listen"] = f"127.0.0.1:{smtp_port}"
    merged.setdefault("links", {}).update(listen=f"127.0.0.1:{links_port}",
                                          base_url=f"http://127.0.0.1:{links_port}")
    tmp.mkdir(parents=True, exist_ok=True)
    p = Proxy(tmp, downstream_port, merged, env)
    p.smtp_port, p.links_port = smtp_port, links_port
    return p

# --- Messages sent through Postfix and counted downstream (shared by the Postfix tests) ---

@dataclass
class Sent:
    message_id: str
    raw: bytes
    big: dict[str, bytes] = field(default_factory=dict)  # over the threshold: to be offloaded
    small: dict[str, bytes] = field(default_factory=dict)  # kept inline
    queue_id: str = ""  # Postfix's, once it logged the message


def compose(tag: str, big: dict[str, bytes] | None = None, small: dict[str, bytes] | None = None,
            subject: str = "Postfix relay test") -> Sent:
    mid = f"<{tag}.{uuid.uuid4().hex}@sender.test>"
    big, small = big or {}, small or {}
    files = [attachment(d, n, "application/pdf" if n.endswith(".pdf") else "image/png")
             for n, d in {**big, **small}.items()]
    body = multipart(text(), *files) if files else text(f"Hello,\r\nplain message {tag}.\r\n")
    headers = [("From", "Customer <customer@sender.test>"), ("To", "support@example.com"),
               ("Subject", f"{subject} {tag}"), ("Date", email.utils.formatdate()),
               ("Message-ID", mid), ("MIME-Version", "1.0")]
    raw = b"".join(f"{k}: {v}\r\n".encode() for k, v in headers) + body
    return Sent(mid, raw, big, small)


def submit_all(mta: Postfix, sent: list[Sent]) -> None:
    for s in sent:
        mta.submit(s.raw)
    ids = wait_for(lambda: (q := mta.queue_ids()) and all(s.message_id in q for s in sent) and q,
                   "Postfix to log every submitted message", timeout=30, diagnose=mta.diagnose)
    for s in sent:
        s.queue_id = ids[s.message_id]


_MID = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]+>)", re.I | re.M)


def message_id(content: bytes) -> str:
    head = content.split(b"\r\n\r\n", 1)[0]
    (mid,) = _MID.findall(head)
    return mid.decode()


def arrivals(sink) -> collections.Counter:
    """How often each Message-ID arrived downstream."""
    return collections.Counter(message_id(m.content) for m in sink.messages)


def received(sink, s: Sent):
    """The one downstream copy of `s` (the sink's record: content, envelope)."""
    (got,) = [m for m in sink.messages if message_id(m.content) == s.message_id]
    return got


def deliver_all(mta: Postfix, sink, sent: list[Sent], timeout: float = 60.0) -> None:
    """Flush Postfix (about once a second) until every message arrived downstream and
    Postfix's queue is empty: nothing is left that could still arrive a second time."""
    wanted = {s.message_id for s in sent}
    last_flush = [0.0]

    def done() -> bool:
        if wanted <= set(arrivals(sink)) and not mta.queue():
            return True
        if time.monotonic() - last_flush[0] >= 1.0:
            mta.flush()
            last_flush[0] = time.monotonic()
        return False

    wait_for(done, "every message downstream and an empty Postfix queue", timeout=timeout,
             diagnose=lambda: f"arrived: {dict(arrivals(sink))}\n{mta.diagnose()}")
