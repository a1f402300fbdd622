"""The command line as a person meets it: --version, help that lists every command and shows
every default, check-config --show as a TOML file, and quiet ends on a closed pipe."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import smtp_offload
from smtp_offload import cli
from smtp_offload import config as config_mod
from tests.support import samples
from tests.support.env import ROOT
from tests.support.mail import attachment, message, multipart, text
from tests.support.proc import write_config

COMMANDS = {"serve", "check-config", "scan", "links", "portal", "quarantine", "send-samples"}
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in (config_mod.SECRET_ENV, config_mod.API_KEYS_ENV)}


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smtp_offload", *args], capture_output=True, text=True,
                          cwd=cwd, env=env or CLEAN_ENV, timeout=60)


def test_version_is_the_package_version():
    r = run("--version")
    assert r.returncode == 0 and r.stdout == f"smtp-offload {smtp_offload.__version__}\n"
    assert smtp_offload.__version__ == importlib.metadata.version("smtp-offload")  # pyproject's


def _parsers(parser: argparse.ArgumentParser, path: str = "smtp-offload"):
    """Every parser of the command line with its command path, sub-subcommands included."""
    yield path, parser
    for action in parser._actions:  # noqa: SLF001 - argparse has no public walk
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_top_level_help_lists_every_command_with_a_description():
    r = run("--help")
    assert r.returncode == 0
    listed = {}
    for line in r.stdout[r.stdout.index("commands:"):].splitlines()[2:]:
        words = line.split(maxsplit=1)
        if line.startswith("    ") and not line.startswith("     ") and words:
            listed[words[0]] = words[1:]
    assert set(listed) == COMMANDS, r.stdout
    top = cli.parser()
    (commands,) = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]  # noqa: SLF001
    assert set(commands.choices) == COMMANDS  # nothing added without being listed here
    assert all(h.help for h in commands._choices_actions)  # noqa: SLF001 - each one's line in the list


def test_every_option_help_shows_its_default():
    walked, missing = [], []
    for path, parser in _parsers(cli.parser()):
        shown = " ".join(parser.format_help().split())
        for action in parser._actions:  # noqa: SLF001
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
                walked.append(f"{path} {action.option_strings[0]}")
                if f"(default: {action.default})" not in shown:
                    missing.append(f"{path} {action.option_strings[0]}")
            elif action.option_strings and action.help and "default" in action.help.lower():
                walked.append(f"{path} {action.option_strings[0]}")  # a default in words (links.ttl_seconds)
    assert not missing, f"options whose help hides their default: {missing}"
    assert {"smtp-offload send-samples --scale", "smtp-offload send-samples --server",
            "smtp-offload links refresh --config", "smtp-offload quarantine purge --config"} <= set(walked)
    assert "(default: 1.0)" in run("send-samples", "--help").stdout


def _round_trip(tmp_path: Path, source: Path) -> str:
    r = run("check-config", "--config", str(source), "--show", "--offline")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    shown = tmp_path / "shown.toml"
    shown.write_text(r.stdout)
    assert tomllib.loads(r.stdout)  # the whole output is TOML: the summary lines are comments
    original, back = config_mod.load(source, env={}), config_mod.load(shown, env={})
    assert dataclasses.replace(back, source=original.source) == original
    return r.stdout


def test_check_config_show_prints_toml_that_loads_back_to_the_same_config(tmp_path):
    source = write_config(tmp_path / "c.toml", {
        "server": {"listen": "127.0.0.1:2600", "accepted_domains": ["example.com", "example.de"],
                   "max_message_bytes": 50 * 1024 * 1024},
        "policy": {"offload_over_bytes": 5 * 1024 * 1024, "on_blocked": "reject"},
        "storage.local": {"path": str(tmp_path / "store")},
        # Tenants are often domains: a dotted key must stay one key, not become nested tables.
        "storage": {"routes": {"eu.example.com": "eu"}},
        "storage.stores.eu": {"backend": "local"},
        "storage.stores.eu.local": {"path": str(tmp_path / "eu")},
        "links": {"ttl_seconds": 3600},
    })
    out = _round_trip(tmp_path, source)
    assert '"eu.example.com" = "eu"' in out
    assert out.startswith(f"# {source}: ok\n#   SMTP        127.0.0.1:2600 for example.com, example.de; up to 50.0 MiB")
    assert "\n[server]\n" in out and 'on_blocked = "reject"' in out
    example = ROOT / "config" / "smtp-offload.example.toml"  # S3, routes, many keys: no secrets in it
    _round_trip(tmp_path, example)


def test_check_config_show_masks_secrets_and_json_stays(tmp_path):
    secret = "x" * 40
    source = write_config(tmp_path / "c.toml", {"links": {"secret": secret}})
    r = run("check-config", "--config", str(source), "--show", "--offline")
    assert r.returncode == 0 and secret not in r.stdout
    assert tomllib.loads(r.stdout)["links"]["secret"] == "********"
    assert "# secrets are shown as ********" in r.stdout
    r = run("check-config", "--config", str(source), "--show", "--json", "--offline")
    assert r.returncode == 0 and secret not in r.stdout + r.stderr
    assert json.loads(r.stdout)["links"]["secret"] == "********"  # stdout is the JSON alone
    assert f"{source}: ok" in r.stderr
    plain = run("check-config", "--config", str(source), "--offline")
    assert plain.stdout.startswith(f"{source}: ok\n") and "[server]" not in plain.stdout


def _closed_pipe(args: list[str], cwd: Path, buffered: bool) -> subprocess.CompletedProcess:
    """The command with a stdout whose reader is gone (`| head` that has exited): every write fails."""
    read, write = os.pipe()
    os.close(read)
    env = {**CLEAN_ENV, config_mod.SECRET_ENV: "s" * 40}
    env.pop("PYTHONUNBUFFERED", None) if buffered else env.update(PYTHONUNBUFFERED="1")
    try:
        return subprocess.run([sys.executable, "-m", "smtp_offload", *args], stdout=write, stderr=subprocess.PIPE,
                              text=True, cwd=cwd, env=env, timeout=60)
    finally:
        os.close(write)


# Buffered, the error comes at the final flush; unbuffered (PYTHONUNBUFFERED), at the first print.
@pytest.mark.parametrize("args, buffered", [
    (["check-config", "--show", "--offline"], True), (["check-config", "--show", "--json", "--offline"], False),
    (["scan", "m.eml", "--json"], True), (["scan", "m.eml"], False),
    (["quarantine", "list"], False), (["--help"], True),
], ids=lambda v: " ".join(v) if isinstance(v, list) else ("buffered" if v else "unbuffered"))
def test_a_closed_pipe_ends_quietly(tmp_path, args, buffered):
    (tmp_path / "var" / "store").mkdir(parents=True)
    (tmp_path / "m.eml").write_bytes(message(multipart(text(), attachment(samples.pdf(), "a.pdf",
                                                                          "application/pdf"))))
    r = _closed_pipe(args, tmp_path, buffered)
    assert r.stderr == "" or (args[0] == "check-config" and "--json" in args and "Traceback" not in r.stderr), \
        r.stderr
    assert r.returncode in (0, 141)  # 141: as a process killed by SIGPIPE (`yes | head`)
    if args != ["--help"]:  # argparse itself swallows the error of its help text
        assert r.returncode == 141


def test_head_of_check_config_show(tmp_path):
    """As typed in a shell: the first line, and nothing else on the terminal."""
    r = subprocess.run(f"{sys.executable} -m smtp_offload check-config --show --offline | head -1",
                       shell=True, capture_output=True, text=True, cwd=tmp_path, env=CLEAN_ENV, timeout=60)
    assert r.returncode == 0 and r.stdout == "# <embedded default>: ok\n" and r.stderr == ""
