"""send-samples against a running proxy, with the harness's own recording sink downstream."""

from __future__ import annotations

import json
import subprocess
import sys
from email import message_from_bytes, policy

from tests.support.net import free_port
from tests.support.proc import Proxy


def test_send_samples_reports_every_decision_and_saves_what_the_sink_received(tmp_path):
    sink_port = free_port()
    saved = tmp_path / "relayed"
    proxy = Proxy(tmp_path, sink_port, {"policy": {"offload_over_bytes": 1_000_000},
                                        "downstream": {"max_message_bytes": 3_000_000}}).start()
    try:
        r = subprocess.run([sys.executable, "-m", "smtp_offload", "send-samples", "--server",
                            f"127.0.0.1:{proxy.smtp_port}", "--to", "support@example.com", "--sink",
                            f"127.0.0.1:{sink_port}", "--scale", "0.1", "--json", "--save", str(saved)],
                           capture_output=True, text=True, timeout=300)
    finally:
        proxy.stop()
    assert r.returncode == 0, r.stderr
    rows = {row["sample"]: row for row in json.loads(r.stdout)}
    assert len(rows) == 11 and all(row["code"] == 250 for row in rows.values())
    assert "[11/11]" in r.stderr  # progress
    verdicts = {name: [d["verdict"] for d in row["decisions"]] for name, row in rows.items()}
    assert verdicts["plain text"] == []
    assert verdicts["small PDF"] == ["keep"] and verdicts["DOCX"] == ["keep"]
    assert verdicts["30 MiB PDF"] == ["offload"] and verdicts["12 MiB JPEG"] == ["offload"]
    assert verdicts["executable named invoice.pdf"] == ["blocked"]
    assert verdicts["zero-byte file"] == ["empty"]
    assert verdicts["forwarded message"] == ["keep"]
    assert rows["Japanese file name"]["decisions"][0]["name"] == "請求書.pdf"
    planned = verdicts["over the downstream limit"]
    assert "offload" in planned and "keep" in planned  # just enough offloaded to fit
    assert rows["over the downstream limit"]["size_relayed"] <= 3_000_000

    # --save: each message as the sink received it, named by its number and sample
    files = sorted(p.name for p in saved.iterdir())
    assert len(files) == 11 and files[0] == "01-plain-text.eml" and files[3] == "04-30-mib-pdf.eml"
    assert f"in {saved}" in r.stderr  # the summary says where
    contract = message_from_bytes((saved / "04-30-mib-pdf.eml").read_bytes(), policy=policy.default)
    assert contract["Subject"] == "Scanned contract"
    assert "X-Smtp-Offload-Attachment" in contract and not list(contract.iter_attachments())  # the link instead
    assert rows["30 MiB PDF"]["saved"] == str(saved / "04-30-mib-pdf.eml")
    assert (saved / files[-1]).stat().st_size == rows["over the downstream limit"]["size_relayed"]


def test_save_needs_the_sink(tmp_path):
    r = subprocess.run([sys.executable, "-m", "smtp_offload", "send-samples", "--save", str(tmp_path / "d")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--save needs --sink" in r.stderr and "usage:" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "d").exists()
