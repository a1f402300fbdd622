"""The command line and the config file contract."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from smtp_offload import config as config_mod
from smtp_offload.errors import ConfigError
from tests.support import samples
from tests.support.env import ROOT
from tests.support.mail import attachment, b64, entity, message, multipart, text
from tests.support.net import RawSession
from tests.support.proc import write_config


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
    r = run("check-config", "--config", str(ROOT / "config" / "smtp-offload.example.toml"), "--offline")
    assert r.returncode == 0, r.stderr
    assert "S3 bucket acme-contact-center-attachments" in r.stdout  # the readable summary
    r = run("check-config", "--config", str(ROOT / "config" / "smtp-offload.example.toml"), "--show", "--json",
            "--offline")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["links"]["secret"] in ("", "********")


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
    ("[links]\nclick_ttl_seconds = 700000\n", "links.click_ttl_seconds"),
    ("[links]\nmode = \"presigned\"\nrequire_agent = true\ntrusted_proxies = [\"127.0.0.1\"]\n"
     "[storage]\nbackend = \"s3\"\ns3.bucket = \"bucket\"\n", "links.require_agent"),
    ("[links]\nrequire_agent = true\n", "links.require_agent"),
    ("[links]\ntrusted_proxies = [\"proxy.example\"]\n", "links.trusted_proxies[0]"),
    ("[storage]\nbackend = \"azure\"\nazure.container = \"files\"\n"
     "azure.account_url = \"https://a.blob.core.windows.net/?sv=1&sig=SECRET\"\n", "storage.azure.account_url"),
    ("[storage]\nbackend = \"azure\"\nazure.container = \"Bad_Name\"\nazure.account_url = \"https://a\"\n",
     "storage.azure.container"),
    ("[storage]\nbackend = \"gcs\"\n", "storage.gcs.bucket"),
    ("[policy]\nquarantine_sender = \"not an address\"\n", "policy.quarantine_sender"),
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


def _keys(table: dict, prefix=""):
    """Every key of a config file, dotted, as config_mod.table() lays the file out."""
    for key, value in table.items():
        if isinstance(value, dict):
            yield from _keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_readme_config_reference_covers_every_key():
    """The README's reference names every key the code accepts, so the two cannot drift."""
    readme = (ROOT / "README.md").read_text()
    reference = readme[readme.index("## Configuration reference"):]
    missing = [k for k in _keys(config_mod.table(config_mod.Config())) if f"`{k}`" not in reference]
    assert not missing, f"keys missing from the README's configuration reference: {missing}"


# -- scan: the proxy's reply, documented exit codes, any input --------------------------------


def _nested(depth: int) -> bytes:
    inner = text()
    for _ in range(depth):
        inner = multipart(inner, text())
    return inner


def _ambiguous() -> bytes:
    named = entity([("Content-Type", 'application/pdf; name="report.exe"'),
                    ("Content-Disposition", 'attachment; filename="report.pdf"'),
                    ("Content-Transfer-Encoding", "base64")], b64(samples.pdf()))
    return message(multipart(text(), named))


def _bare_lf() -> bytes:
    return message(text("a line\nwith a bare line feed\r\n"))  # CRLF line ends, one bare LF


SCAN_CASES = {  # name: (config overrides, the message as sent over SMTP, the expected reply's start)
    "deliverable": ({}, message(multipart(text(), attachment(samples.png(), "logo.png", "image/png"))),
                    "250 2.0.0"),
    "too many parts": ({"policy": {"max_mime_parts": 5}}, message(multipart(*[text()] * 8)),
                       "550 5.6.0 Message structure refused: more than 5 MIME parts"),
    "nested too deep": ({"policy": {"max_mime_depth": 3}}, message(_nested(6)),
                        "550 5.6.0 Message structure refused:"),
    "header block": ({"policy": {"max_header_bytes": 4096}},
                     message(text(), extra=[(f"X-Filler-{i}", "x" * 60) for i in range(100)]),
                     "550 5.6.0 Message structure refused:"),
    "bare newlines": ({"server": {"bare_newlines": "reject"}}, _bare_lf(), "554 5.5.2"),
    "ambiguous MIME": ({"policy": {"on_ambiguous_mime": "reject"}}, _ambiguous(), "550 5.6.0 Ambiguous MIME"),
    "blocked file": ({"policy": {"on_blocked": "reject"}},
                     message(multipart(text(), attachment(samples.pe_exe(), "setup.exe", "application/octet-stream"))),
                     '550 5.7.1 Attachment "setup.exe" refused:'),
    # max_line_length counts as the proxy's reader does: the CR, and a leading dot doubled on the wire
    "longest line": ({"server": {"max_line_length": 1000}}, message(text("y" * 1001 + "\r\n")), "250 2.0.0"),
    "line too long": ({"server": {"max_line_length": 1000}}, message(text("y" * 1002 + "\r\n")), "500 5.5.2"),
    "longest dotted line": ({"server": {"max_line_length": 1000}}, message(text("." * 1000 + "\r\n")),
                            "250 2.0.0"),
    "dotted line too long": ({"server": {"max_line_length": 1000}}, message(text("." * 1001 + "\r\n")),
                             "500 5.5.2"),
    "too big": ({"server": {"max_message_bytes": 50_000}},
                message(multipart(text(), attachment(samples.big_pdf(60_000), "a.pdf", "application/pdf"))),
                "552 5.3.4"),
}


def _proxy_reply(proxy, raw: bytes) -> str:
    """The proxy's reply to exactly these bytes as DATA (smtplib would repair bare newlines)."""
    assert raw.endswith(b"\r\n") and not raw.startswith(b".")
    with RawSession(proxy.smtp_port) as s:
        assert s.start_data().startswith(b"354")
        s.send(raw.replace(b"\r\n.", b"\r\n..") + b".\r\n")  # dot-stuffed
        return s.reply().decode().strip()


@pytest.mark.parametrize("case", list(SCAN_CASES))
def test_scan_gives_the_reply_the_proxy_gives(make_proxy, sink, tmp_path, case):
    overrides, raw, expected = SCAN_CASES[case]
    proxy = make_proxy(overrides)
    on_disk = raw if case == "bare newlines" else raw.replace(b"\r\n", b"\n")  # .eml files: LF line ends
    eml = tmp_path / "m.eml"
    eml.write_bytes(on_disk)
    r = run("scan", str(eml), "--config", str(proxy.config), "--json")
    assert "Traceback" not in r.stderr, r.stderr
    out = json.loads(r.stdout)
    assert out["reply"].startswith(expected), out["reply"]
    assert {"file", "message_id", "size", "projected_size", "rejected", "attachments"} <= set(out)
    deliverable = expected.startswith("250")
    assert r.returncode == (0 if deliverable else 1)
    assert out["rejected"] == (None if deliverable else out["reply"])
    sent = _proxy_reply(proxy, raw)
    assert sent.startswith("250 2.0.0 Ok: queued as") if deliverable else sent == out["reply"]
    text_run = run("scan", str(eml), "--config", str(proxy.config))
    assert text_run.returncode == r.returncode and f"reply: {out['reply']}" in text_run.stdout


def _junk() -> bytes:
    import random

    return random.Random(11).randbytes(200_000)


ODD_FILES = {
    "binary junk": _junk(),
    "empty": b"",
    "only headers": b"Subject: no body, no blank line",
    "huge header block": b"".join(b"X-H-%d: %s\n" % (i, b"v" * 70) for i in range(20_000)) + b"\nbody\n",
    "one huge header line": b"Subject: " + b"=?utf-8?q?x?= " * 200_000 + b"\n\nbody\n",
    "NUL and control bytes": b"Subject: \x00\x01\x02\n\n\x00\x00body\x1b[2J\n",
    "undecodable names": b'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: application/pdf; '
                         b'name="\xff\xfe\xed.pdf"\nContent-Disposition: attachment; filename="\xc3(\x80.exe"\n'
                         b"Content-Transfer-Encoding: base64\n\nTVqQAAMAAAAEAAAA\n--b--\n",
    "unterminated multipart": b'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: text/plain\n\nx\n',
}


@pytest.mark.parametrize("name", list(ODD_FILES))
def test_scan_never_crashes(tmp_path, name):
    eml = tmp_path / "odd.eml"
    eml.write_bytes(ODD_FILES[name])
    for extra in ((), ("--json",)):
        r = run("scan", str(eml), *extra)
        assert r.returncode in (0, 1) and "Traceback" not in r.stderr, r.stderr[-2000:]
        reply = json.loads(r.stdout)["reply"] if extra else r.stdout.splitlines()[-1]
        assert re.match(r"(reply: )?[245]\d\d [245]\.\d+\.\d+ ", reply), reply
        assert (r.returncode == 0) == (reply.removeprefix("reply: ")[0] == "2")


def test_scan_exit_codes_for_usage_and_config_errors(tmp_path):
    eml = tmp_path / "ok.eml"
    eml.write_bytes(message(text()))
    assert run("scan", str(eml)).returncode == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("[policy]\non_blocked = \"explode\"\n")
    r = run("scan", str(eml), "--config", str(bad))
    assert r.returncode == 2 and "policy.on_blocked" in r.stderr
    r = run("scan", str(tmp_path))  # a directory
    assert r.returncode == 2 and "cannot read" in r.stderr
    assert run("scan").returncode == 2  # argparse: the file is missing
    r = run("scan", "--help")
    assert r.returncode == 0 and "exit status" in r.stdout
    assert all(f"  {code}  " in r.stdout for code in (0, 1, 2))
    assert "Traceback" not in r.stderr
