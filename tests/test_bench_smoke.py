"""The benchmark runs end to end (`python -m bench --quick`): every scenario produced messages
and no unexpected reply. Nothing here asserts a time or a ratio: those are for people to read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.postfix import unavailable as postfix_unavailable
from tests.support.env import missing

ROOT = Path(__file__).resolve().parent.parent


def test_bench_quick(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=180)
    assert out.exists(), f"no results (exit {proc.returncode})\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    results = json.loads(out.read_text())
    scenarios = results["scenarios"]
    assert set(scenarios) == set("abcdefg"), scenarios.keys()
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
        if scenario["mode"] in ("once", "burst"):
            for name, r in scenario["candidates"].items():
                if name.startswith("proxy"):
                    assert r["offloaded"], (key, name)
    # (a): every peer of the small messages answered, with its CPU per message measured.
    peers = scenarios["a"]["candidates"]
    assert {"discard", "smtp-sink", "passthrough", "passthrough-pooled", "proxy"} <= set(peers), peers.keys()
    assert all(r["server_cpu_ms_per_msg"] > 0 for r in peers.values()), peers
    # (g): every message of the burst answered 250, each of the proxy's in the store.
    burst = results["meta"]["options"]["burst"]
    for name, r in scenarios["g"]["candidates"].items():
        assert r["messages_ok"] == burst, (name, r.get("runs"))
    assert scenarios["g"]["candidates"]["proxy"]["stored"] == [burst]
    # (f): the API answered the upload synchronously, accepted, and the peer read every byte.
    sent = [r["message_bytes"][0] for r in scenarios["f"]["candidates"]["proxy (API)"]["runs"]]
    for r in scenarios["f"]["candidates"]["proxy (API)"]["runs"]:
        assert r["status"] == 200 and r["response"]["verdict"] == "accepted", r.get("response")
    for r, size in zip(scenarios["f"]["candidates"]["aiohttp discard"]["runs"], sent):
        assert r["status"] == 200 and r["response"]["bytes"] == size, r.get("response")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # Postfix as a relay: in (a) and (g), every message it accepted relayed to the receiver
    # (bench/run.py counts its log's status=sent against its 250s: a shortfall is "unexpected").
    why = postfix_unavailable()
    if why:
        assert results["meta"]["postfix"] == {"candidate": False, "reason": why,
                                              "version": results["meta"]["postfix"]["version"]}
        assert scenarios["a"]["skipped_candidates"]["postfix"] == why
        assert scenarios["g"]["skipped_candidates"] == {"postfix": why}
        missing(f"the bench ran without its postfix candidate: {why}")
    for key in "ag":
        r = scenarios[key]["candidates"]["postfix"]
        relayed = r["postfix"] if key == "a" else r["postfix"][0]
        assert relayed["deliveries"] == {"sent": relayed["accepted"]} and relayed["queued"] == 0, relayed
