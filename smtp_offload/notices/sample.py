"""A notice with every rule and every outcome, rendered at start (Notices.check) so that a
template an administrator broke fails then, naming its file, and never on a customer's mail."""

from __future__ import annotations

from ..inspect.rules import RULES
from .items import Item

# One plausible value for each fact a rule may carry (inspect/rules.py RULES).
FACTS = {
    "type": "application/x-msdownload", "claimed": "application/pdf", "ext": "exe", "double": "pdf.exe",
    "kind": "html", "feature": "script element", "member": "setup.exe", "member_type": "application/x-msdownload",
    "problem": "double_extension", "container": "message", "file": "invoice.pdf.exe", "inner": "program",
}
LONG_LINK = "https://files.example.com/f/" + "A" * 72  # 100 characters, what links.short promises


def sample_items() -> list[Item]:
    common = dict(size="97.8 KiB", type="application/x-msdownload", reason="executable files are not accepted")
    items = [Item(name=f"sample-{rule}.pdf", state="removed", verdict="blocked", rule=rule,
                  facts={k: FACTS[k] for k in facts}, **common) for rule, facts in RULES.items()]
    items += [
        Item(name="winmail.dat", state="removed", verdict="blocked", rule="tnef", **common),
        Item(name="unknown.bin", state="removed", verdict="blocked", rule="", **common),
        Item(name="held.pdf", state="removed", verdict="spoofed", rule="disguised", facts=dict(FACTS),
             quarantine_id="eu-0123456789abcdef", **common),
        Item(name="claim-photo.jpg", size="12.3 MiB", type="image/jpeg", state="offloaded", verdict="offload",
             link=LONG_LINK, expires="2026-12-07 14:05 UTC"),
        Item(name="scan.tiff", size="48.0 MiB", type="image/tiff", state="not_stored", verdict="offload"),
        Item(name="odd.xyz", size="1.0 KiB", type="application/x-whatever", state="removed", verdict="spoofed",
             rule="declared_mismatch", facts={"type": "application/x-whatever", "claimed": "x-made/up"}),
    ]
    return items
