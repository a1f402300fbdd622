"""The README's first command on a fresh checkout: `make run` builds a venv with what the proxy
needs (no test tools), starts the proxy, and a supervisor's SIGTERM stops it cleanly.

pip may use its cache (as a second install on a machine would); the package index must be
reachable, as it is for `make test` itself."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.env import ROOT, missing
from tests.support.net import free_port, wait_port, wait_smtp
from tests.support.proc import write_config

TEST_TOOLS = {"pytest", "moto", "selenium", "hypothesis", "schemathesis", "flask"}


def _fresh_checkout(dest: Path) -> Path:
    """This working tree without what git ignores (the venv, var/, caches): a clone, with
    uncommitted edits and new files."""
    if shutil.which("git") is None or shutil.which("make") is None:
        missing("git and make are needed for the `make run` test")
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"], capture_output=True)
    if listed.returncode != 0:
        missing(f"{ROOT} is not a git checkout")
    for name in listed.stdout.decode().split("\0"):
        src = ROOT / name
        if name and src.is_file():  # a tracked file deleted in the working tree is gone
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def _descendants(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        for child in (task / "children").read_text().split():
            out += [int(child), *_descendants(int(child))]
    return out


def _serving(make_pid: int) -> int:
    """The pid of `smtp-offload serve` under make (make may run it through a shell)."""
    for pid in _descendants(make_pid):
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if any(a.endswith(b"smtp-offload") for a in argv) and b"serve" in argv:
            return pid
    raise AssertionError(f"no smtp-offload serve process under make ({make_pid})")


def _make_run(checkout: Path, venv: Path, tmp: Path) -> tuple[subprocess.Popen, Path, int]:
    """`make run` with a config on free ports, as a person would start it; (make, its log, the
    SMTP port) once the proxy answers SMTP and serves links. A port taken between free_port()
    and the bind starts it again (the venv is there by then)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    for attempt in range(3):
        smtp_port, links_port = free_port(), free_port()
        config = write_config(tmp / "smtp-offload.toml", {
            "server": {"listen": f"127.0.0.1:{smtp_port}"},
            "links": {"listen": f"127.0.0.1:{links_port}", "base_url": f"http://127.0.0.1:{links_port}"},
            "storage.local": {"path": str(tmp / "store")},
        })
        log = tmp / f"make-run-{attempt}.log"
        with open(log, "wb") as out:
            make = subprocess.Popen(["make", "run", f"VENV={venv}", f"CONFIG={config}"], cwd=checkout, env=env,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_smtp(smtp_port, make, timeout=300)
            wait_port(links_port, make, timeout=30)
            return make, log, smtp_port
        except (RuntimeError, TimeoutError) as exc:
            if make.poll() is None:
                os.killpg(make.pid, signal.SIGKILL)
                make.wait()
            if "in use" not in log.read_text() or attempt == 2:
                raise AssertionError(f"make run did not start the proxy ({exc}):\n{log.read_text()[-4000:]}") \
                    from None
    raise AssertionError("unreachable")


def test_make_run_on_a_fresh_checkout_installs_only_the_runtime_and_stops_on_sigterm(tmp_path, capsys):
    checkout = _fresh_checkout(tmp_path / "checkout")
    venv = tmp_path / "venv"
    started = time.monotonic()
    make, log, _ = _make_run(checkout, venv, tmp_path)
    try:
        seconds = time.monotonic() - started
        with capsys.disabled():  # the lead reports it; never asserted
            print(f"\n[make run] fresh checkout, fresh venv: proxy answering SMTP after {seconds:.1f} s")

        listed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
                                capture_output=True, text=True, timeout=120)
        assert listed.returncode == 0, listed.stderr
        installed = {p["name"].lower() for p in json.loads(listed.stdout)}
        assert "smtp-offload" in installed and "aiosmtpd" in installed
        assert not installed & TEST_TOOLS, f"test tools in the runtime venv: {sorted(installed & TEST_TOOLS)}"
        assert (venv / ".run-installed").exists() and not (venv / ".test-installed").exists()

        # What it found, for the person who typed `make run` (the downstream of the default config).
        deadline = time.monotonic() + 60
        while "\n  downstream  127.0.0.1:2526: " not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        shown = log.read_text()
        assert "smtp-offload " in shown and " started\n" in shown and "\n  downstream  127.0.0.1:2526: " in shown, \
            shown[-4000:]

        os.kill(_serving(make.pid), signal.SIGTERM)  # as a supervisor stops the service
        assert make.wait(timeout=120) == 0, log.read_text()[-4000:]
        assert "Traceback" not in log.read_text()
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()


def test_a_second_make_run_does_not_run_pip(tmp_path):
    """The stamps: with the runtime installed, `make -n run` plans no pip and no venv."""
    if shutil.which("make") is None:
        missing("make is needed for the Makefile test")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    (venv / ".run-installed").touch()
    planned = subprocess.run(["make", "-n", "run", f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True,
                             timeout=60)
    assert planned.returncode == 0, planned.stderr
    assert "pip install" not in planned.stdout and "-m venv" not in planned.stdout
    assert "smtp-offload serve" in planned.stdout
    (venv / ".run-installed").unlink()
    planned = subprocess.run(["make", "-n", "run", f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True,
                             timeout=60)
    assert 'pip install --quiet -e .\n' in planned.stdout and "[test]" not in planned.stdout
    planned = subprocess.run(["make", "-n", "install-test", f"VENV={venv}"], cwd=ROOT, capture_output=True,
                             text=True, timeout=60)
    assert '-e ".[test]"' in planned.stdout
