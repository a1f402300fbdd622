"""The Debian nginx with a private prefix, for the tests of the shipped nginx sites
(tests/test_nginx_sso.py, tests/test_deploy_files.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.support.env import missing
from tests.support.net import wait_port


def _nginx() -> str:
    exe = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if exe is None:
        missing("nginx not installed (Debian package nginx; scripts/system-deps installs it)")
    return exe


class Nginx:
    """The Debian nginx with a private prefix: its own config, pid file, logs and temp dirs."""

    def __init__(self, prefix: Path, site: str) -> None:
        self.exe, self.prefix = _nginx(), prefix
        (prefix / "site.conf").write_text(site)
        temp = " ".join(f"{kind}_temp_path {prefix / kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                                           "uwsgi", "scgi"))
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(f"""worker_processes 1;
events {{ worker_connections 64; }}
http {{
    access_log {prefix / 'access.log'};
    {temp}
    include {prefix / 'site.conf'};
}}
""")
        self.error_log = prefix / "error.log"
        self.args = [self.exe, "-p", str(prefix), "-c", str(self.conf), "-e", str(self.error_log),
                     "-g", f"daemon off; pid {prefix / 'nginx.pid'}; error_log {self.error_log} info;"]
        self.proc: subprocess.Popen | None = None

    def check(self) -> subprocess.CompletedProcess:
        return subprocess.run([*self.args, "-t"], capture_output=True, text=True, timeout=60)

    def start(self, port: int) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port, self.proc)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}: {self.error_log.read_text(errors='replace')}") from None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
