"""schemathesis against the live API: every operation of smtp_offload/api/openapi.json fuzzed over
loopback, failing on any 5xx, any response that breaks the schema (body, status, headers,
content type) and any schema-violating request the server accepts.

Not checked: "positive data acceptance" — a schema-valid request may still be refused for its
content (an empty or spoofed file, a link that is not ours), which no schema can say. The seed
is fixed, so a run is repeatable and a failure replays (`st replay <id>` in the output).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.api import KEY
from tests.support.env import missing


def test_the_live_api_keeps_to_its_openapi_document(make_proxy):
    cli = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    if not Path(cli).exists():
        missing("needs schemathesis (pip install -e '.[test]')")
    # A rate high enough that the fuzzing reaches the handlers rather than 429s.
    p = make_proxy({"links": {"api_keys": [{"key": KEY, "rate_per_minute": 1_000_000}]},
                    "api": {"max_bytes": 1_000_000, "max_sync_bytes": 500_000}})
    base = f"http://127.0.0.1:{p.links_port}"
    run = subprocess.run(
        [cli, "run", f"{base}/api/v1/openapi.json", "--url", base, "-H", f"Authorization: Bearer {KEY}",
         "--checks", "all", "--exclude-checks", "positive_data_acceptance", "--max-examples", "80",
         "--seed", "20261130", "--no-color", "--request-timeout", "30"],
        capture_output=True, text=True, timeout=600, cwd=p.tmp)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-8000:]
    doc = json.loads((Path(__file__).parent.parent / "smtp_offload/api/openapi.json").read_text())
    operations = sum(m != "parameters" for item in doc["paths"].values() for m in item)
    assert f"Tested: {operations}" in out or f"Tested: {operations - 1}" in out, out[-3000:]  # all reached
    assert not [e for e in p.events() if e.get("level") in ("error", "critical")]
