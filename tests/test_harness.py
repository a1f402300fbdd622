"""send-samples against a running proxy, with the harness's own recording sink downstream."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.net import free_port
from tests.support.proc import Proxy


def test_send_samples_reports_every_decision(tmp_path):
    sink_port = free_port()
    proxy = Proxy(tmp_path, sink_port, {"policy": {"offload_over_bytes": 1_000_000},
                                        "downstream": {"max_message_bytes": 3_000_000}}).start()
    try:
        r = subprocess.run([sys.executable, "-m", "smtp_offload", "send-samples", "--server",
                            f"127.0.0.1:{proxy.smtp_port}", "--to", "support@example.com", "--sink",
                            f"127.0.0.1:{sink_port}", "--scale", "0.1", "--json"],
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
    assert verdicts["30 MB PDF"] == ["offload"] and verdicts["12 MB JPEG"] == ["offload"]
    assert verdicts["executable named invoice.pdf"] == ["blocked"]
    assert verdicts["zero-byte file"] == ["empty"]
    assert verdicts["forwarded message"] == ["keep"]
    assert rows["Japanese file name"]["decisions"][0]["name"] == "請求書.pdf"
    planned = verdicts["over the downstream limit"]
    assert "offload" in planned and "keep" in planned  # just enough offloaded to fit
    assert rows["over the downstream limit"]["size_relayed"] <= 3_000_000
