"""Real components on loopback: the proxy as a subprocess (`python -m smtp_offload serve`) with
its own config file, the product's recording sink as the downstream, moto's S3 server."""

from __future__ import annotations

import json
import os
import re
import signal
import smtplib
import subprocess
import sys
from pathlib import Path

from smtp_offload.config import dump_sections
from smtp_offload.smtp.sink import Received, RecordingSink
from tests.support.net import free_port, wait_port, wait_smtp


class Sink(RecordingSink):
    """The product's recording sink (smtp_offload/smtp/sink.py), started on a free loopback port,
    keeping every message. `recorder` scripts replies (data_reply, rcpt_replies) and takes
    replaced hooks; `smtp_kwargs` go to aiosmtpd (tls_context, require_starttls, decode_data ...)."""

    def __init__(self, **smtp_kwargs):
        self.port = free_port()
        super().__init__("127.0.0.1", self.port, keep=None, **smtp_kwargs)
        self.start()

    @property
    def messages(self) -> list[Received]:
        return list(self.recorder.messages)


def write_config(path: Path, sections: dict[str, dict]) -> Path:
    path.write_text(dump_sections(sections))
    return path


def dead_s3(**policy) -> dict[str, dict]:
    """Overrides for S3 storage on a port nobody listens on (credentials: the s3server fixture)."""
    return {"storage": {"backend": "s3"},
            "storage.s3": {"bucket": "any-bucket", "endpoint_url": f"http://127.0.0.1:{free_port()}",
                           "region": "us-east-1", "connect_timeout": 1},
            "policy": {"offload_over_bytes": 10_000, **policy}}


class PortTaken(RuntimeError):
    pass


class Proxy:
    """smtp-offload started as in production: its own process, its own config file."""

    def __init__(self, tmp: Path, downstream_port: int, overrides: dict[str, dict] | None = None,
                 env: dict[str, str] | None = None, wrapper: tuple[str, ...] = ()):
        self.extra_env = env or {}
        self.wrapper = wrapper  # a command the proxy runs under (e.g. unshare), as a supervisor would
        self.tmp = tmp
        self.store = tmp / "store"
        self.downstream_port, self.overrides = downstream_port, overrides or {}
        self.config = tmp / "smtp-offload.toml"
        sections = self._write_config()
        self.proxy_protocol = bool(sections["server"].get("proxy_protocol"))
        self.log_path = tmp / "proxy.log"
        self.proc: subprocess.Popen | None = None

    def _write_config(self) -> dict[str, dict]:
        """Pick free ports and write the config file with them (again on a retry)."""
        self.smtp_port, self.links_port = free_port(), free_port()
        sections = {
            "server": {"listen": f"127.0.0.1:{self.smtp_port}", "accepted_domains": ["example.com"],
                       "hostname": "mx.test"},
            "downstream": {"host": "127.0.0.1", "port": self.downstream_port, "tls": "none"},
            "storage": {"backend": "local"},
            "storage.local": {"path": str(self.store)},
            "links": {"listen": f"127.0.0.1:{self.links_port}", "base_url": f"http://127.0.0.1:{self.links_port}",
                      "secret_file": str(self.tmp / "link-secret")},
            # JSON lines only, and no probe connection to the downstream at start (tests count
            # them): the start-up summary is tested where a test turns it on.
            "log": {"format": "json", "summary": False},
            # No DNS from tests (only loopback is reachable): DKIM is tested in-process with a resolver.
            "auth": {"verify_dkim": False},
        }
        for section, values in self.overrides.items():
            sections.setdefault(section, {}).update(values)
        write_config(self.config, sections)
        return sections

    def start(self) -> "Proxy":
        for attempt in range(3):
            try:
                return self._start()
            except PortTaken:
                # free_port() gave a port that something else took before the proxy bound it
                # (the kernel hands the same range to outgoing connections): new ports, again.
                if attempt == 2:
                    raise
                self._write_config()
        raise AssertionError("unreachable")

    def _start(self) -> "Proxy":
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
            output = self.log_path.read_text(errors='replace')[-3000:]
            if "address already in use" in output:
                self.log_path.write_text("")
                raise PortTaken(output) from None
            raise RuntimeError(f"{exc}; proxy output:\n{output}") from None
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


def stop_process(proc: subprocess.Popen, grace: float = 15) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; reaped either way."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def refused_start(tmp: Path, downstream_port: int, overrides: dict[str, dict],
                  env: dict[str, str] | None = None) -> str:
    """Start a proxy that must refuse to start; its log (which says why, without a traceback)."""
    import pytest

    p = Proxy(tmp, downstream_port, overrides, env)
    with pytest.raises(RuntimeError):
        p.start()
    p.stop()
    out = p.log_path.read_text()
    assert "Traceback" not in out
    return out


def assert_clean_log(proxy: Proxy) -> None:
    """Turning a connection away or cutting it off is not an error: nothing logged as one."""
    assert not [e for e in proxy.events() if e.get("level") in ("error", "critical")]
    assert "Traceback" not in proxy.log_path.read_text(errors="replace")


def summary_of(proxy: Proxy, timeout: float = 30) -> str:
    """The human start-up summary the proxy printed on stderr (smtp_offload/startup.py; the test
    turns log.summary on), once it is there: its "smtp-offload
    <version> started" line and the indented lines after it (one write: nothing comes between)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        lines = proxy.log_path.read_text(errors="replace").splitlines()
        start = next((i for i, line in enumerate(lines) if re.match(r"smtp-offload \S+ started", line)), None)
        if start is not None:
            block = [lines[start]]
            for line in lines[start + 1:]:
                if not line.startswith("  "):
                    break
                block.append(line)
            return "\n".join(block) + "\n"
        if time.monotonic() > deadline or (proxy.proc is not None and proxy.proc.poll() is not None):
            raise AssertionError("no start-up summary; proxy output:\n" + "\n".join(lines[-30:]))
        time.sleep(0.05)


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
