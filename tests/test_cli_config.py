"""The command line and the config file contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import samples
from conftest import ROOT, write_config
from mail import attachment, message, multipart, text
from smtp_offload import config as config_mod
from smtp_offload.errors import ConfigError


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smtp_offload", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=60)


def test_config_default_toml_is_generated_from_the_code():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen-default-config")], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == (ROOT / "config" / "default.toml").read_text(), \
        "run scripts/gen-default-config > config/default.toml"


def test_embedded_default_matches_config_default_toml():
    from_file = config_mod.load(ROOT / "config" / "default.toml", env={})
    assert config_mod.as_dict(from_file) == config_mod.as_dict(config_mod.load(None, env={}))


def test_example_config_is_valid(tmp_path):
    r = run("check-config", "--config", str(ROOT / "config" / "smtp-offload.example.toml"), "--show", "--offline")
    assert r.returncode == 0, r.stderr
    assert "S3 bucket acme-contact-center-attachments" in r.stdout  # the readable summary
    shown = json.loads(r.stdout[r.stdout.index("\n{") + 1:])
    assert shown["links"]["secret"] in ("", "********")


@pytest.mark.parametrize("body, key", [
    ("[server]\nlisten = 25\n", "server.listen"),
    ("[server]\nlisten = \"nohostport\"\n", "server.listen"),
    ("[server]\naccepted_domains = []\n", "server.accepted_domains"),
    ("[server]\nmax_message_bytes = -1\n", "server.max_message_bytes"),
    ("[policy]\non_spoofed = \"delete\"\n", "policy.on_spoofed"),
    ("[policy]\nofload_over_bytes = 5\n", "policy.ofload_over_bytes"),
    ("[storage]\nbackend = \"ftp\"\n", "storage.backend"),
    ("[links]\nttl_seconds = \"7d\"\n", "links.ttl_seconds"),
    ("[links]\nbase_url = \"ftp://x\"\n", "links.base_url"),
    ("[links]\nsecret = \"short\"\n", "links.secret"),
    ("[downstream]\nport = true\n", "downstream.port"),
    ("[server]\ntls_cert = \"/nonexistent.pem\"\ntls_key = \"/nonexistent.key\"\n", "server.tls_cert"),
    ("[server\n", "not valid TOML"),
])
def test_config_errors_name_the_key(tmp_path, body, key):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(ConfigError) as err:
        config_mod.load(path, env={})
    assert key in str(err.value)
    r = run("check-config", "--config", str(path))
    assert r.returncode == 2 and key in r.stderr and "Traceback" not in r.stderr


def test_missing_config_file_is_a_clear_error(tmp_path):
    r = run("serve", "--config", str(tmp_path / "nope.toml"))
    assert r.returncode == 2 and "not found" in r.stderr


def test_secret_from_environment(tmp_path):
    cfg = config_mod.load(None, env={config_mod.SECRET_ENV: "s" * 40})
    assert cfg.links.secret == "s" * 40
    assert "s" * 40 not in json.dumps(config_mod.as_dict(cfg))


def test_scan_prints_verdicts(tmp_path):
    eml = tmp_path / "in.eml"
    # on disk with LF line ends, as .eml files usually are
    eml.write_bytes(message(multipart(text(), attachment(samples.pe_exe(), "invoice.pdf", "application/pdf"),
                                      attachment(samples.big_pdf(200_000), "big.pdf", "application/pdf"),
                                      attachment(samples.png(), "logo.png", "image/png"))).replace(b"\r\n", b"\n"))
    cfg = write_config(tmp_path / "c.toml", {"policy": {"offload_over_bytes": 100_000}})
    r = run("scan", str(eml), "--config", str(cfg), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert {a["name"]: a["verdict"] for a in out["attachments"]} == \
        {"invoice.pdf": "blocked", "big.pdf": "offload", "logo.png": "keep"}
    assert out["attachments"][0]["detected_type"] == "application/x-msdownload"
    assert out["rejected"] is None
    r = run("scan", str(eml), "--config", str(cfg))
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert "3 attachment(s)" in lines[0]
    assert any("invoice.pdf" in ln and "blocked" in ln for ln in lines)
    assert any("big.pdf" in ln and "offload" in ln for ln in lines)
    assert not list(tmp_path.glob("var")), "scan must not store anything"
    rej = write_config(tmp_path / "r.toml", {"policy": {"on_blocked": "reject"}})
    r = run("scan", str(eml), "--config", str(rej), "--json")
    assert json.loads(r.stdout)["rejected"].startswith("550 5.7.1")


def test_scan_unreadable_file(tmp_path):
    r = run("scan", str(tmp_path / "missing.eml"))
    assert r.returncode == 2 and "cannot read" in r.stderr


def test_first_start_generates_secret_file(proxy):
    secret = proxy.tmp / "link-secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    assert len(secret.read_bytes().strip()) >= 32
    (ev,) = proxy.events("link_secret_generated")
    assert ev["path"] == str(secret)
    assert secret.read_text().strip() not in proxy.log_path.read_text()


def _keys(obj, prefix=""):
    import dataclasses

    for f in dataclasses.fields(obj):
        if f.metadata.get("internal"):
            continue
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _keys(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}"


def test_readme_config_reference_covers_every_key():
    """The README's reference names every key the code accepts, so the two cannot drift."""
    readme = (ROOT / "README.md").read_text()
    reference = readme[readme.index("## Configuration reference"):]
    missing = [k for k in _keys(config_mod.Config()) if f"`{k}`" not in reference]
    assert not missing, f"keys missing from the README's configuration reference: {missing}"
