"""Postfix itself as a bench candidate: a private relaying instance (smtpd -> queue -> smtp
to the bench's receiver), what a user would otherwise put where the proxy sits.

The instance has its own config_directory, its queue_directory and data_directory on tmpfs
(/dev/shm: no disk in the measurement, as the proxy's store is the only disk it writes
besides its spool), no chroot, no content filter, and logs to a file (maillog_file) so a
failure is diagnosable. Its process tree hangs off the master (found by its pid file); its
memory and CPU are the sum over that tree (master, smtpd, cleanup, qmgr, smtp, postlogd...).

The object looks like a procs.Child (name, pid, alive(), log_path, log_tail(), stop()), so
the bench's Children registry stops it whatever happens.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from .procs import free_port, wait_port

POSTFIX = Path("/usr/sbin/postfix")
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")  # where a message waits

# The services a relaying instance needs; no chroot (column 5 = n), so nothing is copied into
# the queue directory (tests/support/postfix.py uses this table too).
MASTER_CF = """\
127.0.0.1:{smtp_port} inet n - n - - smtpd
pickup    unix  n - n 60    1 pickup
cleanup   unix  n - n -     0 cleanup
qmgr      unix  n - n 300   1 qmgr
rewrite   unix  - - n -     - trivial-rewrite
bounce    unix  - - n -     0 bounce
defer     unix  - - n -     0 bounce
trace     unix  - - n -     0 bounce
verify    unix  - - n -     1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -     - proxymap
smtp      unix  - - n -     - smtp
relay     unix  - - n -     - smtp
showq     unix  n - n -     - showq
error     unix  - - n -     - error
retry     unix  - - n -     - error
discard   unix  - - n -     - discard
anvil     unix  - - n -     1 anvil
scache    unix  - - n -     1 scache
postlog   unix-dgram n - n - 1 postlogd
"""

_SENT = re.compile(r"\]: [0-9A-F]{6,}: to=<[^>]*>, .*\bstatus=(\w+)")
_ERRORS = re.compile(r"\]: (fatal|panic|error): ")


def unavailable() -> str | None:
    """Why a private Postfix instance cannot run here, or None."""
    if not POSTFIX.exists():
        return f"Postfix is not installed ({POSTFIX}); scripts/system-deps installs the Debian package"
    if os.geteuid() != 0:
        return "a private Postfix instance must be started as root (its daemons drop to the postfix user)"
    return None


class PostfixRelay:
    def __init__(self, name: str, relay_port: int, tmpfs: Path = Path("/dev/shm")):
        # Short paths (UNIX sockets: 108 bytes), readable by the postfix user.
        base = tmpfs if tmpfs.is_dir() and os.access(tmpfs, os.W_OK) else None
        self.name = name
        self.root = Path(tempfile.mkdtemp(prefix="smtp-offload-bench-pf-", dir=base))
        self.root.chmod(0o755)
        self.conf, self.queue_dir, self.data_dir = self.root / "conf", self.root / "queue", self.root / "data"
        self.log_path = self.root / "maillog"
        self.port = free_port()
        self.relay_port = relay_port
        self._pid: int | None = None
        for d in (self.conf, self.queue_dir):
            d.mkdir(mode=0o755)
        (self.conf / "main.cf").write_text(self.main_cf())
        (self.conf / "master.cf").write_text(MASTER_CF.format(smtp_port=self.port))

    def main_cf(self) -> str:
        settings = {
            "compatibility_level": "3.6",
            "config_directory": self.conf,
            "queue_directory": self.queue_dir,
            "data_directory": self.data_dir,
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "syslog_name": "postfix-bench",
            "maillog_file": self.log_path,
            "maillog_file_prefixes": self.root,  # the default allows only /var and /dev/stdout
            "myhostname": "postfix.bench.test",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "relay_domains": "example.com",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "relayhost": f"[127.0.0.1]:{self.relay_port}",
            "alias_maps": "",
            "alias_database": "",
            "biff": "no",
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            # The bench's 34.2 MiB message (the default limit is 10240000 bytes); smtpd wants 1.5x
            # this free in the queue's file system.
            "message_size_limit": 104857600,
            # 20 load sessions + their cleanup and smtp processes; every session comes from 127.0.0.1
            # (the proxy runs with max_sessions_per_client = 0 too).
            "default_process_limit": 100,
            "smtpd_client_connection_count_limit": 0,
            # A failed delivery stays queued (and is reported), never bounces; retried soon.
            "soft_bounce": "yes",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "queue_run_delay": "1s",
        }
        return "".join(f"{k} = {v}\n" for k, v in settings.items())

    # -- the Child interface ------------------------------------------------------------
    @property
    def pid(self) -> int:
        return self._pid or 0

    def alive(self) -> bool:
        if not self._pid:
            return False
        try:
            os.kill(self._pid, 0)
        except ProcessLookupError:
            return False
        return True

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(POSTFIX), "-c", str(self.conf), *args], capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise RuntimeError(f"postfix {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}\n"
                               f"{self.log_tail(1500)}")
        return proc

    def start(self, timeout: float = 30.0) -> "PostfixRelay":
        # `start` creates the queue subdirectories with the ownership Postfix wants (a separate
        # `postfix check` would cost seconds more).
        self._run("start")
        deadline = time.monotonic() + timeout
        while self._pid is None and time.monotonic() < deadline:
            try:
                self._pid = int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                time.sleep(0.05)
        wait_port(self.port, timeout=max(1.0, deadline - time.monotonic()), what="postfix smtpd")
        return self

    def stop(self, grace: float = 10.0) -> None:
        """`postfix stop`; the master's process group is killed if it is still there after
        `grace` seconds. The instance's files (config, queue, log) are removed."""
        if self._pid:
            pid, self._pid = self._pid, None
            try:
                self._run("stop", check=False)
            except subprocess.TimeoutExpired:
                pass
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.05)
            if _alive(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)  # the master is a session leader: its group is the instance
                except (ProcessLookupError, PermissionError):
                    pass
        shutil.rmtree(self.root, ignore_errors=True)

    # -- queue and deliveries -------------------------------------------------------------
    def queued(self) -> int:
        """Messages still in the queue (not yet delivered to the receiver)."""
        n = 0
        for q in QUEUES:
            for _, _, files in os.walk(self.queue_dir / q):
                n += len(files)
        return n

    def drain(self, timeout: float = 120.0) -> bool:
        """Wait until the queue is empty (every accepted message relayed); False past `timeout`."""
        deadline = time.monotonic() + timeout
        while self.queued():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def deliveries(self) -> dict[str, int]:
        """Delivery attempts by status (sent, deferred, bounced...) from the log."""
        out: dict[str, int] = {}
        for m in map(_SENT.search, self.log_tail(1 << 30).splitlines()):
            if m:
                out[m[1]] = out.get(m[1], 0) + 1
        return out

    def errors(self) -> int:
        return sum(1 for line in self.log_tail(1 << 30).splitlines() if _ERRORS.search(line))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes (the master is not our child; init reaps it).
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
