"""Operations: the sd_notify protocol as systemd sees it (a real AF_UNIX datagram socket as
NOTIFY_SOCKET, the proxy as a real process), the unit file checked by `systemd-analyze
verify`, the production config and the tmpfiles retention rule."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from smtp_offload import sdnotify
from tests.support.env import ROOT, missing
from tests.support.net import free_port

DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "smtp-offload.service"
INSTALLED_BIN = "/opt/smtp-offload/venv/bin/smtp-offload"  # where the unit expects the entry point


# --- a NOTIFY_SOCKET that records what arrives, with the sender's pid ----------------------

class NotifySocket:
    """systemd's side: an AF_UNIX datagram socket with SO_PASSCRED, so that every message
    carries the sender's pid (as systemd checks it for NotifyAccess=main)."""

    def __init__(self, abstract: bool = False):
        self.dir = Path(tempfile.mkdtemp(prefix="sdn-"))  # short: sun_path holds 108 bytes
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        if abstract:
            name = f"smtp-offload-test-{os.getpid()}-{time.monotonic_ns()}"
            self.sock.bind("\0" + name)
            self.env_value = "@" + name
        else:
            path = self.dir / "notify"
            self.sock.bind(str(path))
            self.env_value = str(path)
        self.messages: list[tuple[int, list[str]]] = []  # (sender pid, lines)

    def receive(self, timeout: float) -> None:
        """Collect whatever arrives within `timeout` seconds (at least one poll)."""
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except (socket.timeout, BlockingIOError):
                return
            pid = -1
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", payload[:12])[0]
            self.messages.append((pid, data.decode().split("\n")))
            if time.monotonic() >= deadline:
                return

    def wait_for(self, line: str, count: int = 1, timeout: float = 30.0) -> list[tuple[int, list[str]]]:
        """Receive until `count` messages holding `line` arrived; return them."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.with_line(line)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} x {line!r} not received in {timeout:.0f} s; got {self.messages}")
            self.receive(0.2)

    def with_line(self, line: str) -> list[tuple[int, list[str]]]:
        return [m for m in self.messages if line in m[1]]

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def notify_socket():
    s = NotifySocket()
    yield s
    s.close()


# --- sdnotify, in this process ------------------------------------------------------------

@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_notify_sends_one_datagram_per_call(monkeypatch, abstract):
    s = NotifySocket(abstract=abstract)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", s.env_value)
        assert sdnotify.enabled()
        assert sdnotify.ready("up\nand running")
        assert sdnotify.status("42 sessions")
        assert sdnotify.watchdog()
        assert sdnotify.stopping()
        s.receive(0.5)
        assert [lines for _, lines in s.messages] == [
            ["READY=1", "STATUS=up and running"], ["STATUS=42 sessions"], ["WATCHDOG=1"], ["STOPPING=1"]]
        assert {pid for pid, _ in s.messages} == {os.getpid()}
    finally:
        s.close()


def test_everything_is_a_no_op_without_notify_socket(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    assert not sdnotify.enabled()
    assert sdnotify.ready() is False and sdnotify.watchdog() is False and sdnotify.stopping() is False
    assert sdnotify.watchdog_interval() is None
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/notify")  # a socket that is gone: still no exception
    assert sdnotify.ready() is False


def test_watchdog_interval(monkeypatch, notify_socket):
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.env_value)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert sdnotify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert sdnotify.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert sdnotify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", "")
    for bad in ("0", "-5", "soon", ""):
        monkeypatch.setenv("WATCHDOG_USEC", bad)
        assert sdnotify.watchdog_interval() is None


# --- the proxy under a NOTIFY_SOCKET ------------------------------------------------------

WATCHDOG_ENV = {"WATCHDOG_USEC": "2000000"}  # 2 s: pings every second


def test_single_process_ready_watchdog_stopping(make_proxy, notify_socket):
    proxy = make_proxy(env={"NOTIFY_SOCKET": notify_socket.env_value, **WATCHDOG_ENV})
    (ready,) = notify_socket.wait_for("READY=1")
    # Sent after both listeners were up (make_proxy waited for both ports; READY follows "started").
    assert proxy.events("started")
    assert any(line.startswith("STATUS=SMTP 127.0.0.1:") for line in ready[1]), ready
    notify_socket.wait_for("WATCHDOG=1", count=4, timeout=30)  # repeatedly, from the event loop
    assert all(any(x.startswith("STATUS=") and "sessions" in x for x in lines)
               for _, lines in notify_socket.with_line("WATCHDOG=1"))
    assert notify_socket.with_line("STOPPING=1") == []

    proxy.proc.send_signal(signal.SIGTERM)
    notify_socket.wait_for("STOPPING=1")
    assert proxy.proc.wait(30) == 0
    notify_socket.receive(0.2)
    # NotifyAccess=main: every message came from the process systemd started.
    assert {pid for pid, _ in notify_socket.messages} == {proxy.proc.pid}
    assert len(notify_socket.with_line("READY=1")) == 1
    assert proxy.stop() == 0


def test_no_watchdog_pings_without_watchdog_usec(make_proxy, notify_socket):
    proxy = make_proxy(env={"NOTIFY_SOCKET": notify_socket.env_value, "WATCHDOG_USEC": ""})
    notify_socket.wait_for("READY=1")
    notify_socket.receive(1.5)
    assert notify_socket.with_line("WATCHDOG=1") == []
    assert proxy.stop() == 0
    notify_socket.receive(0.5)
    assert notify_socket.with_line("STOPPING=1")


def worker_pids(proxy) -> list[int]:
    """The pids of the first workers, from the parent's `workers_started` log event."""
    (ev,) = proxy.events("workers_started")
    return ev["pids"]


def test_workers_parent_speaks_for_all_and_a_frozen_worker_stops_the_pings(make_proxy, notify_socket):
    proxy = make_proxy({"server": {"workers": 2}}, env={"NOTIFY_SOCKET": notify_socket.env_value, **WATCHDOG_ENV})
    (ready,) = notify_socket.wait_for("READY=1")
    assert ready[0] == proxy.proc.pid  # the parent, not a worker (NotifyAccess=main)
    assert len(proxy.events("started")) == 2, "READY=1 before every worker had its listeners up"
    assert any(line.startswith("STATUS=2/2 workers up; SMTP 127.0.0.1:") for line in ready[1]), ready
    notify_socket.wait_for("WATCHDOG=1", count=3, timeout=30)

    workers = worker_pids(proxy)
    assert len(workers) == 2, workers
    os.kill(workers[0], signal.SIGSTOP)  # one frozen worker; the other one keeps pinging its parent
    try:
        # The parent goes silent: find a stretch of 3 s (1.5 watchdog intervals) without a ping.
        deadline = time.monotonic() + 30
        while True:
            before = len(notify_socket.with_line("WATCHDOG=1"))
            notify_socket.receive(3.0)
            if len(notify_socket.with_line("WATCHDOG=1")) == before:
                break
            assert time.monotonic() < deadline, "the parent kept pinging for a frozen worker"
        silent = len(notify_socket.with_line("WATCHDOG=1"))
        notify_socket.receive(2.0)
        assert len(notify_socket.with_line("WATCHDOG=1")) == silent  # and stays silent
    finally:
        os.kill(workers[0], signal.SIGCONT)
    notify_socket.wait_for("WATCHDOG=1", count=silent + 2, timeout=30)  # thawed: pings again

    proxy.proc.send_signal(signal.SIGTERM)
    notify_socket.wait_for("STOPPING=1")
    assert proxy.proc.wait(30) == 0
    notify_socket.receive(0.2)
    assert {pid for pid, _ in notify_socket.messages} == {proxy.proc.pid}
    assert len(notify_socket.with_line("READY=1")) == 1
    assert proxy.stop() == 0


def test_workers_ready_waits_for_every_worker_and_a_respawn_is_reported(make_proxy, notify_socket):
    proxy = make_proxy({"server": {"workers": 2}}, env={"NOTIFY_SOCKET": notify_socket.env_value})
    notify_socket.wait_for("READY=1")
    workers = worker_pids(proxy)
    assert len(workers) == 2
    os.kill(workers[1], signal.SIGKILL)  # the parent restarts it and says so in STATUS
    notify_socket.wait_for("STATUS=1/2 workers up; " + _summary_tail(notify_socket), timeout=30)
    notify_socket.wait_for("STATUS=2/2 workers up; " + _summary_tail(notify_socket), count=2, timeout=30)
    assert len(notify_socket.with_line("READY=1")) == 1  # READY is said once
    assert notify_socket.with_line("WATCHDOG=1") == []  # no WATCHDOG_USEC, no pings
    assert proxy.stop() == 0


def test_workers_a_slow_restart_does_not_stop_the_pings(make_proxy, notify_socket, s3server):
    """A respawned worker pings only once it is up; until then the parent must not count its
    silence against the watchdog, or systemd kills every healthy worker with it."""
    s3_port = free_port()  # nobody listens at first: the first workers start at once
    proxy = make_proxy({"server": {"workers": 2},
                        "storage": {"backend": "s3"},
                        "storage.s3": {"bucket": "any-bucket", "region": "us-east-1",
                                       "endpoint_url": f"http://127.0.0.1:{s3_port}",
                                       "connect_timeout": 1, "read_timeout": 5}},
                       env={"NOTIFY_SOCKET": notify_socket.env_value, **WATCHDOG_ENV})
    notify_socket.wait_for("READY=1")
    notify_socket.wait_for("WATCHDOG=1", count=2)
    with socket.socket() as hang:  # now storage accepts and never answers: a start takes
        hang.bind(("127.0.0.1", s3_port))  # the storage check's whole budget (10 s)
        hang.listen(16)
        os.kill(worker_pids(proxy)[1], signal.SIGKILL)
        tail = _summary_tail(notify_socket)
        notify_socket.wait_for("STATUS=1/2 workers up; " + tail, timeout=30)
        (down,) = notify_socket.with_line("STATUS=1/2 workers up; " + tail)
        notify_socket.wait_for("STATUS=2/2 workers up; " + tail, count=2, timeout=60)
    events = notify_socket.messages
    starting = events[events.index(down):events.index(notify_socket.with_line("STATUS=2/2 workers up; " + tail)[1])]
    # About ten pings (one a second); judged by the 2 s interval alone, the parent fell silent
    # two seconds after the fork and systemd would have killed the service.
    assert len([m for m in starting if "WATCHDOG=1" in m[1]]) >= 5, starting
    assert proxy.events("storage_unavailable_at_start")
    assert proxy.stop() == 0


def _summary_tail(s: NotifySocket) -> str:
    (ready,) = s.with_line("READY=1")
    status = next(x for x in ready[1] if x.startswith("STATUS="))
    return status.split("; ", 1)[1]


# --- the unit file --------------------------------------------------------------------------

def unit_directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_unit_declares_notify_watchdog_and_sandbox():
    d = unit_directives(UNIT.read_text())
    single = {k: v[-1] for k, v in d.items()}
    expected = {
        "Type": "notify", "NotifyAccess": "main", "WatchdogSec": "30", "Restart": "on-failure",
        "DynamicUser": "yes", "StateDirectory": "smtp-offload", "ProtectSystem": "strict",
        "NoNewPrivileges": "yes", "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
        "AmbientCapabilities": "CAP_NET_BIND_SERVICE", "WorkingDirectory": "/var/lib/smtp-offload",
        "KillSignal": "SIGTERM",
    }
    assert {k: single.get(k) for k in expected} == expected
    assert "ExecReload" not in d  # SIGHUP is only logged; see README "Failure behaviour"
    assert "ReadWritePaths" not in d  # the state directory is the only writable place
    assert "AF_UNIX" in single["RestrictAddressFamilies"].split()  # the notify socket
    assert d["ExecStart"] == [f"{INSTALLED_BIN} serve --config /etc/smtp-offload/smtp-offload.toml"]
    # The drain must finish before systemd's stop timeout: TimeoutStopSec > server.drain_seconds.
    import tomllib
    prod = tomllib.loads((DEPLOY / "smtp-offload.toml").read_text())
    assert float(single["TimeoutStopSec"]) > prod["server"]["drain_seconds"]


def systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        missing("systemd-analyze is not installed (Debian package systemd; scripts/system-deps installs it)")
    return tool


def entry_point() -> str:
    """The installed `smtp-offload` console script of the Python running the tests."""
    for candidate in (Path(sys.executable).parent / "smtp-offload", shutil.which("smtp-offload")):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    missing("the smtp-offload entry point is not installed (pip install -e .)")


def verify_copy(tmp_path: Path) -> Path:
    """The unit copied verbatim, plus a drop-in that points ExecStartPre=/ExecStart= at the
    entry point installed here: `verify` insists that the binaries exist, and
    /opt/smtp-offload/venv is the production path. Every other line is the file as shipped."""
    unit = tmp_path / UNIT.name
    shutil.copyfile(UNIT, unit)
    binary = entry_point()
    dropin = tmp_path / f"{UNIT.name}.d"
    dropin.mkdir()
    lines = ["[Service]"]
    for key, values in unit_directives(UNIT.read_text()).items():
        if key in ("ExecStartPre", "ExecStart"):
            assert all(v.startswith(INSTALLED_BIN + " ") for v in values), values
            lines.append(f"{key}=")  # reset, then the same commands with the local path
            lines += [f"{key}={binary}{v[len(INSTALLED_BIN):]}" for v in values]
    (dropin / "10-test-paths.conf").write_text("\n".join(lines) + "\n")
    return unit


def test_systemd_analyze_verify_passes(tmp_path):
    tool = systemd_analyze()
    unit = verify_copy(tmp_path)
    proc = subprocess.run([tool, "verify", "--man=no", str(unit)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    mine = [line for line in (proc.stderr + proc.stdout).splitlines() if "smtp-offload" in line]
    assert proc.returncode == 0 and mine == [], proc.stderr
    # The drop-in was read (a wrong path there fails): what passed is the unit with its sandbox.
    (tmp_path / f"{UNIT.name}.d" / "20-check.conf").write_text("[Service]\nExecStart=\nExecStart=/nonexistent/x\n")
    bad = subprocess.run([tool, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "/nonexistent/x" in bad.stderr


def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path):
    """The check above can fail: an unknown key is a warning (exit 0), which we refuse too."""
    tool = systemd_analyze()
    unit = verify_copy(tmp_path)
    unit.write_text(unit.read_text().replace("Type=notify", "Type=notify\nWatchdogSecs=30"))
    proc = subprocess.run([tool, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    assert any("smtp-offload" in line and "WatchdogSecs" in line for line in proc.stderr.splitlines()), proc.stderr


def test_systemd_analyze_security_score(tmp_path):
    """Printed for the record (`pytest -s`), not asserted beyond "it ran"."""
    tool = systemd_analyze()
    unit = verify_copy(tmp_path)
    proc = subprocess.run([tool, "security", "--offline=true", "--no-pager", str(unit)], capture_output=True,
                          text=True, timeout=60)
    if proc.returncode != 0 and "offline" in proc.stderr:
        missing("this systemd-analyze has no --offline security mode (a newer systemd has)")
    score = re.search(r"Overall exposure level for \S+: ([0-9.]+ \S+)", proc.stdout)
    print(f"\nsystemd-analyze security {UNIT.name}: {score.group(1) if score else proc.stdout[-300:]}")
    assert score, proc.stdout + proc.stderr


# --- the production config and the retention rule --------------------------------------------

SHIPPED_CONFIGS = ["smtp-offload.toml", "postfix/content-filter/smtp-offload.toml", "postfix/relay/smtp-offload.toml"]


@pytest.mark.parametrize("name", SHIPPED_CONFIGS)
def test_shipped_configs_are_valid_for_the_unit(name):
    import tomllib

    path = DEPLOY / name
    proc = subprocess.run([sys.executable, "-m", "smtp_offload", "check-config", "--offline", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    cfg = tomllib.loads(path.read_text())
    assert cfg["server"]["listen"] == ("0.0.0.0:25" if name == "smtp-offload.toml" else "127.0.0.1:10025")
    assert cfg["storage"]["local"]["path"] == "/var/lib/smtp-offload/store"
    assert cfg["links"]["secret_file"] == "/var/lib/smtp-offload/link-secret"
    # Both inside the unit's state directory, the only place ProtectSystem=strict leaves writable.
    state = "/var/lib/" + unit_directives(UNIT.read_text())["StateDirectory"][0] + "/"
    assert cfg["storage"]["local"]["path"].startswith(state) and cfg["links"]["secret_file"].startswith(state)


def test_tmpfiles_retention_removes_old_files_only(tmp_path):
    tool = shutil.which("systemd-tmpfiles")
    if tool is None:
        missing("systemd-tmpfiles is not installed (Debian package systemd)")
    store = tmp_path / "var/lib/private/smtp-offload/store"
    old = store / "2020/01/01/abc"
    new = store / "2099/01/01/def"
    for d in (old, new, store / ".revoked"):
        d.mkdir(parents=True)
    (old / "contract.pdf").write_bytes(b"old")
    (old / ".contract.pdf.meta.json").write_text("{}")
    (new / "scan.pdf").write_bytes(b"new")
    (store / ".revoked" / "tok1").write_text("")
    long_ago = time.time() - 90 * 86400
    for p in [store / ".revoked" / "tok1", *sorted(old.parents[2].rglob("*"), reverse=True), old.parents[2]]:
        os.utime(p, (long_ago, long_ago))
    proc = subprocess.run([tool, "--clean", f"--root={tmp_path}", str(DEPLOY / "smtp-offload.tmpfiles")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert not (store / "2020").exists()  # the old file, its sidecar and the emptied date directories
    assert (new / "scan.pdf").read_bytes() == b"new"
    assert (store / ".revoked" / "tok1").exists()  # revocations are kept


@pytest.mark.parametrize("arrangement", ["content-filter", "relay"])
def test_postfix_and_proxy_limits_agree(arrangement):
    """deploy/postfix: the proxy takes whatever Postfix queued (size, recipients per delivery)
    and the transport waits longer than the proxy may take to answer the final dot."""
    import tomllib

    d = DEPLOY / "postfix" / arrangement
    main = dict(line.split(" = ", 1) for line in (d / "main.cf").read_text().splitlines()
                if line.strip() and not line.startswith("#"))
    cfg = tomllib.loads((d / "smtp-offload.toml").read_text())
    assert cfg["server"]["max_message_bytes"] >= int(main["message_size_limit"]) + 2**20
    assert cfg["server"]["max_recipients"] >= int(main["smtp-offload_destination_recipient_limit"])
    master = (d / "master.cf").read_text()
    done = int(re.search(r"-o smtp_data_done_timeout=(\d+)s", master).group(1))
    policy, downstream = cfg.get("policy", {}), cfg.get("downstream", {})
    assert done > policy.get("storage_timeout", 120) + downstream.get("data_timeout", 600)
    assert re.search(r"^smtp-offload\s+unix\s+-\s+-\s+n\s+-\s+10\s+smtp$", master, re.M)


# --- a suite to trust: a missing tool under CI=true, scripts/system-deps ---------------------

def test_missing_helper_skips_locally_and_fails_under_ci(monkeypatch):
    from tests.support.env import missing

    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no frobnicator"):
        missing("no frobnicator")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"no frobnicator .*CI=true"):
        missing("no frobnicator")


def _pytest_without_tools(ci: bool) -> subprocess.CompletedProcess:
    """This suite's systemd-analyze test, in a pytest whose PATH has no system tools."""
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = str(Path(sys.executable).parent)
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                           "tests/test_deploy.py::test_systemd_analyze_verify_passes"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)


def test_a_missing_tool_fails_the_run_under_ci():
    local = _pytest_without_tools(ci=False)
    assert local.returncode == 0 and "1 skipped" in local.stdout, local.stdout[-2000:]
    ci = _pytest_without_tools(ci=True)
    assert ci.returncode == 1 and "1 failed" in ci.stdout, ci.stdout[-2000:]
    assert "systemd-analyze is not installed" in ci.stdout and "CI=true" in ci.stdout


def test_ci_entry_point_sets_ci():
    assert re.search(r"^export CI=true$", (ROOT / ".ci" / "run").read_text(), re.M)


SYSTEM_DEPS = ROOT / "scripts" / "system-deps"


def _system_deps(tmp_path: Path, uid: int, apt: str | None, ci: bool = False) -> subprocess.CompletedProcess:
    """scripts/system-deps with a PATH on which openssl, systemd-analyze and python3 are missing,
    `id -u` answers `uid` and apt-get (when given) behaves as `apt` says: "fail" (install exits
    100) or "noop" (exits 0 and installs nothing). Nothing on the system is changed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    if apt is not None:
        (bin_dir / "apt-get").write_text(
            f'#!/bin/sh\necho "$*" >> "{bin_dir / "apt.log"}"\n'
            + ('[ "$1" = install ] && { echo "E: Unable to locate package" >&2; exit 100; }\n' if apt == "fail" else "")
            + "exit 0\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    if ci:
        env["CI"] = "true"
    return subprocess.run(["/bin/bash", str(SYSTEM_DEPS)], capture_output=True, text=True, timeout=60, env=env)


NEEDED = ("openssl", "python3-venv", "systemd")


def test_system_deps_as_root_fails_loudly_when_apt_get_fails(tmp_path):
    r = _system_deps(tmp_path, 0, "fail")
    assert r.returncode != 0
    line = next(ln for ln in r.stderr.splitlines() if ln.startswith("system-deps:"))
    assert "failed" in line and all(p in line for p in NEEDED), r.stderr
    assert "install -y -qq --no-install-recommends openssl python3-venv systemd" in (tmp_path / "bin/apt.log").read_text()


def test_system_deps_as_root_fails_when_the_install_did_not_provide_the_tools(tmp_path):
    r = _system_deps(tmp_path, 0, "noop")
    assert r.returncode != 0
    assert "still missing" in r.stderr and all(p in r.stderr for p in NEEDED), r.stderr


@pytest.mark.parametrize("uid, apt", [(1000, "noop"), (0, None)], ids=["not-root", "no-apt-get"])
def test_system_deps_that_cannot_install_warns_or_fails_under_ci(tmp_path, uid, apt):
    r = _system_deps(tmp_path / "local", uid, apt)
    assert r.returncode == 0 and "please install" in r.stderr and all(p in r.stderr for p in NEEDED), r.stderr
    r = _system_deps(tmp_path / "ci", uid, apt, ci=True)
    assert r.returncode != 0 and "CI=true" in r.stderr and all(p in r.stderr for p in NEEDED), r.stderr
    assert not (tmp_path / "ci/bin/apt.log").exists()  # nothing was attempted
