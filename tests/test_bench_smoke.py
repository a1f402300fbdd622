"""The benchmark runs end to end (`python -m bench --quick`): every scenario produced messages
and no unexpected reply. Nothing here asserts a time or a ratio: those are for people to read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_quick(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=180)
    assert out.exists(), f"no results (exit {proc.returncode})\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    results = json.loads(out.read_text())
    scenarios = results["scenarios"]
    assert set(scenarios) == set("abcdef"), scenarios.keys()
    for key, scenario in scenarios.items():
        assert "error" not in scenario, (key, scenario["error"])
        if scenario.get("skipped"):
            assert key == "e", f"only the workers scenario may be skipped: {key}"
            continue
        assert scenario["candidates"], key
        for name, r in scenario["candidates"].items():
            assert r["throughput"] > 0, (key, name, r)
            assert r["messages_ok"] > 0, (key, name, r)
            assert r["unexpected"] == 0, (key, name, r.get("replies"), r.get("errors"), r.get("error"))
        if scenario["mode"] == "once":
            for name, r in scenario["candidates"].items():
                if name.startswith("proxy"):
                    assert r["offloaded"], (key, name)
    # (f): the API answered the upload synchronously, accepted, and the peer read every byte.
    sent = [r["message_bytes"][0] for r in scenarios["f"]["candidates"]["proxy (API)"]["runs"]]
    for r in scenarios["f"]["candidates"]["proxy (API)"]["runs"]:
        assert r["status"] == 200 and r["response"]["verdict"] == "accepted", r.get("response")
    for r, size in zip(scenarios["f"]["candidates"]["aiohttp discard"]["runs"], sent):
        assert r["status"] == 200 and r["response"]["bytes"] == size, r.get("response")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
