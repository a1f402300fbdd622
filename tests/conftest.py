"""Real components on loopback: the proxy as a subprocess (`python -m smtp_offload serve`),
an aiosmtpd recording server as the downstream, smtplib as the sending client."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest
from hypothesis import settings
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from smtp_offload.config import dump_sections


class LenientSMTP(SMTP):
    line_length_limit = 100_000  # the sink records whatever arrives; the proxy's limits are under test


class SinkController(Controller):
    def factory(self):
        return LenientSMTP(self.handler, **self.SMTP_kwargs)

# Property tests explore at random on a workstation (and remember what failed); under CI they
# replay the same examples every run, so a red CI is a regression, never the luck of a draw.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parent.parent
CORPORA = ROOT.parent / "shared" / "corpora"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing(reason: str, *, module: bool = False) -> NoReturn:
    """A tool or data set a test needs is absent (Postfix, Chromium, HAProxy, systemd-analyze,
    openssl, ../shared/corpora): skipped on a workstation, a failure under CI=true, where a
    skip would hide that the test never ran. `module=True` at module level."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} [CI=true: a missing tool fails the run; scripts/system-deps installs it]",
                    pytrace=False)
    pytest.skip(reason, allow_module_level=module)


def two_free_ports() -> int:
    """A free port whose next port is free too (a base for per-worker ports)."""
    for _ in range(50):
        base = free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", base + 1))
            return base
        except OSError:
            continue
    raise RuntimeError("no two consecutive free ports")


def self_signed(directory: Path, cn: str = "mx.test") -> tuple[str, str]:
    """A self-signed certificate and its key, made with openssl in `directory`: (cert, key)."""
    import shutil

    if not shutil.which("openssl"):
        missing("openssl not installed (Debian package openssl)")
    crt, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={cn}",
                    "-keyout", str(key), "-out", str(crt)], check=True, capture_output=True)
    return str(crt), str(key)


@pytest.fixture(scope="module")
def cert(tmp_path_factory) -> tuple[str, str]:
    """A certificate for the proxy's STARTTLS: (server.tls_cert, server.tls_key)."""
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def scripted():
    """Make scripted downstreams (tests/scripted.py): make(decide=None); stopped after the
    test, which fails if one of them met a bug of its own."""
    from scripted import ScriptedDownstream

    servers: list = []

    def make(decide=None):
        servers.append(ScriptedDownstream(decide))
        return servers[-1]

    yield make
    for s in servers:
        s.stop()
        assert s.errors == []


CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def chrome(profile: Path, prefs: dict | None = None, capabilities: dict | None = None):
    """Debian's Chromium, headless, driven by selenium with an explicit driver path (so
    selenium-manager never downloads anything) and a fresh profile; missing() without it."""
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        missing(f"needs {CHROMIUM} and {CHROMEDRIVER} (Debian packages chromium, chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
                f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    if prefs:
        opts.add_experimental_option("prefs", prefs)
    for name, value in (capabilities or {}).items():
        opts.set_capability(name, value)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)


def wait_smtp(port: int, proc: subprocess.Popen | None = None, timeout: float = 20.0) -> None:
    """Wait until the SMTP port greets, with probes that are over when this returns: each says
    QUIT and reads to the server's close, so the server no longer counts it (a probe it still
    counted would take a slot of server.max_sessions from the test)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                f = s.makefile("rb")
                if f.readline().startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    while f.readline():  # 221, then the server's close
                        pass
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"port {port} does not greet")


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} not listening")


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    mail_options: list[str]


@dataclass
class SinkHandler:
    """Records what it accepts; replies can be scripted per test."""

    messages: list[Received] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_reply: str | None = None
    mail_reply: str | None = None

    async def handle_MAIL(self, server, session, envelope, address, options):
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server, session, envelope, address, options):
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        if self.data_reply:
            return self.data_reply
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), content,
                                      list(envelope.mail_options)))
        return "250 2.0.0 Ok: queued downstream"


class Sink:
    def __init__(self, **smtp_kwargs):
        self.port = free_port()
        self.handler = SinkHandler()
        kwargs = {"data_size_limit": None, "enable_SMTPUTF8": True, **smtp_kwargs}
        self.controller = SinkController(self.handler, hostname="127.0.0.1", port=self.port, **kwargs)
        self.controller.start()

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    def stop(self):
        self.controller.stop()


@pytest.fixture
def sink():
    s = Sink()
    yield s
    s.stop()


def write_config(path: Path, sections: dict[str, dict]) -> Path:
    path.write_text(dump_sections(sections))
    return path


def dead_s3(**policy) -> dict[str, dict]:
    """Overrides for S3 storage on a port nobody listens on (credentials: the s3server fixture)."""
    return {"storage": {"backend": "s3"},
            "storage.s3": {"bucket": "any-bucket", "endpoint_url": f"http://127.0.0.1:{free_port()}",
                           "region": "us-east-1", "connect_timeout": 1},
            "policy": {"offload_over_bytes": 10_000, **policy}}


class Proxy:
    """smtp-offload started as in production: its own process, its own config file."""

    def __init__(self, tmp: Path, downstream_port: int, overrides: dict[str, dict] | None = None,
                 env: dict[str, str] | None = None, wrapper: tuple[str, ...] = ()):
        self.extra_env = env or {}
        self.wrapper = wrapper  # a command the proxy runs under (e.g. unshare), as a supervisor would
        self.smtp_port, self.links_port = free_port(), free_port()
        self.tmp = tmp
        self.store = tmp / "store"
        sections = {
            "server": {"listen": f"127.0.0.1:{self.smtp_port}", "accepted_domains": ["example.com"],
                       "hostname": "mx.test"},
            "downstream": {"host": "127.0.0.1", "port": downstream_port, "tls": "none"},
            "storage": {"backend": "local"},
            "storage.local": {"path": str(self.store)},
            "links": {"listen": f"127.0.0.1:{self.links_port}", "base_url": f"http://127.0.0.1:{self.links_port}",
                      "secret_file": str(tmp / "link-secret")},
            "log": {"format": "json"},
            # No DNS from tests (only loopback is reachable): DKIM is tested in-process with a resolver.
            "auth": {"verify_dkim": False},
        }
        for section, values in (overrides or {}).items():
            sections.setdefault(section, {}).update(values)
        self.config = write_config(tmp / "smtp-offload.toml", sections)
        self.proxy_protocol = bool(sections["server"].get("proxy_protocol"))
        self.log_path = tmp / "proxy.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Proxy":
        self._log = open(self.log_path, "ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.extra_env}
        env.pop("SMTP_OFFLOAD_LINK_SECRET", None)
        self.proc = subprocess.Popen([*self.wrapper, sys.executable, "-m", "smtp_offload", "serve",
                                      "--config", str(self.config)],
                                     stdout=self._log, stderr=subprocess.STDOUT, cwd=self.tmp, env=env,
                                     start_new_session=True)  # its own group: nothing it forks outlives the test
        try:
            if self.proxy_protocol:  # it greets only after a PROXY header: a connection will do
                wait_port(self.smtp_port, self.proc)
            else:
                wait_smtp(self.smtp_port, self.proc)
            wait_port(self.links_port, self.proc)
        except (RuntimeError, TimeoutError) as exc:
            self.stop()
            raise RuntimeError(f"{exc}; proxy output:\n{self.log_path.read_text(errors='replace')[-3000:]}") from None
        return self

    def stop(self) -> int | None:
        if self._log.closed:
            return self.proc.returncode if self.proc else None
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # any worker left behind
            except (ProcessLookupError, PermissionError):
                pass
        self._log.close()
        return self.proc.returncode if self.proc else None

    def events(self, name: str | None = None) -> list[dict]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if name is None or ev.get("event") == name:
                out.append(ev)
        return out

    def client(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30)

    def send(self, message: bytes, sender: str = "customer@sender.test",
             rcpts: tuple[str, ...] = ("support@example.com",)) -> tuple[int, bytes]:
        """Send one message; return the final DATA reply (code, text)."""
        with self.client() as c:
            c.ehlo("client.test")
            code, text = c.mail(sender)
            assert code == 250, text
            for r in rcpts:
                code, text = c.rcpt(r)
                assert code == 250, (r, code, text)
            return c.data(message)


AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}


class S3Server:
    """moto's S3-compatible HTTP server on loopback (a real server, not in-process patching)."""

    def __init__(self):
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._n = 0

    def client(self, service: str = "s3"):
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def new_bucket(self) -> str:
        self._n += 1
        name = f"offload-test-{self._n}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        resp = self.client().list_objects_v2(Bucket=bucket)
        return sorted(o["Key"] for o in resp.get("Contents", []))


@pytest.fixture(scope="session")
def s3server():
    old = {k: os.environ.get(k) for k in AWS_ENV}
    os.environ.update(AWS_ENV)
    server = S3Server()
    yield server
    server.server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def make_proxy(tmp_path, sink):
    started: list[Proxy] = []

    def make(overrides: dict[str, dict] | None = None, downstream_port: int | None = None,
             env: dict[str, str] | None = None, wrapper: tuple[str, ...] = ()) -> Proxy:
        d = tmp_path / f"p{len(started)}"
        d.mkdir()
        p = Proxy(d, downstream_port or sink.port, overrides, env, wrapper).start()
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


@pytest.fixture
def proxy(make_proxy) -> Proxy:
    return make_proxy()


class RawSession:
    """An SMTP client that writes exactly the bytes it is given (smtplib would fix them up)."""

    def __init__(self, port: int, timeout: float = 20):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rb")
        self.greeting = self.file.readline()

    def reply(self) -> bytes:
        """The last line of the next (possibly multi-line) reply."""
        line = self.file.readline()
        while line[3:4] == b"-":
            line = self.file.readline()
        return line

    def command(self, line: bytes) -> bytes:
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def start_data(self, mail: bytes = b"MAIL FROM:<a@sender.test>",
                   rcpt: bytes = b"RCPT TO:<support@example.com>") -> bytes:
        """EHLO, MAIL, RCPT, DATA; returns the reply to DATA (354 when all went well)."""
        for cmd in (b"EHLO client.test", mail, rcpt, b"DATA"):
            line = self.command(cmd)
        return line

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        # The reader made by makefile() holds the connection open too: close both.
        self.file.close()
        self.sock.close()

    def __enter__(self) -> "RawSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
