"""The planner, a pure function: bytes and policy in, an immutable plan of per-file decisions out.

No proxy, no store, no socket: these call delivery.decide directly.
"""

from __future__ import annotations

import dataclasses

import pytest

from smtp_offload.delivery.decide import (NOTICE_BUDGET, NOTICE_PER_FILE, PER_HEADER, TRACE_BUDGET, DecidePolicy,
                                          Plan, decide, projected_size, visible_count)
from smtp_offload.delivery.policy import BareNewlines, Fit, PlanPolicy
from smtp_offload.delivery.prepare import render
from smtp_offload.errors import PermanentError
from smtp_offload.mime import scan
from smtp_offload.model import Verdict
from tests.support import samples
from tests.support.mail import attachment, message, multipart, rfc822, text

KB = 1024


def blob(size: int, seed: int = 0) -> bytes:
    """Bytes nothing recognises (kept by default), `size` long, different per seed."""
    return bytes((i * 7 + seed) % 251 for i in range(size))


def files(*sizes: int) -> bytes:
    return message(multipart(text(), *(attachment(blob(n, i), f"f{i}.bin", "application/octet-stream")
                                       for i, n in enumerate(sizes))))


def plan_of(raw: bytes, *, fit: Fit = Fit(10**9, 50), **plan_policy) -> Plan:
    return decide(raw, DecidePolicy(plan=PlanPolicy(**plan_policy), fit=fit))


def verdicts(plan: Plan) -> dict[str, Verdict]:
    return {d.file.name: d.verdict for d in plan.decisions}


def test_a_message_that_fits_keeps_every_file_and_is_relayed_byte_for_byte():
    raw = files(10 * KB, 20 * KB)
    plan = plan_of(raw)
    assert verdicts(plan) == {"f0.bin": Verdict.KEEP, "f1.bin": Verdict.KEEP}
    assert plan.refusal is None and plan.changed == ()
    assert render(plan) == raw


def test_over_the_threshold_is_offloaded_whatever_the_fit():
    plan = plan_of(files(10 * KB, 300 * KB), offload_over_bytes=200 * KB)
    assert verdicts(plan) == {"f0.bin": Verdict.KEEP, "f1.bin": Verdict.OFFLOAD}
    assert plan.decisions[1].reason == "larger than the offload threshold"


def test_offloads_largest_first_and_only_until_the_message_fits():
    raw = files(50 * KB, 400 * KB, 200 * KB, 100 * KB)
    full = plan_of(raw)
    # Room for everything but the largest file (its base64 is about 4/3 of 400 KiB).
    limit = full.projected_size - 300 * KB
    plan = plan_of(raw, fit=Fit(limit, 50))
    assert verdicts(plan) == {"f0.bin": Verdict.KEEP, "f1.bin": Verdict.OFFLOAD, "f2.bin": Verdict.KEEP,
                              "f3.bin": Verdict.KEEP}
    assert plan.projected_size <= limit
    assert plan.decisions[1].reason == "offloaded so the message fits the recipient's limits"
    # A tighter limit takes the next largest too, never a smaller one first.
    tighter = plan_of(raw, fit=Fit(plan.projected_size - 200 * KB, 50))
    assert [n for n, v in verdicts(tighter).items() if v is Verdict.OFFLOAD] == ["f1.bin", "f2.bin"]


def test_too_many_attachments_offloads_the_largest_until_the_count_fits():
    plan = plan_of(files(1 * KB, 5 * KB, 3 * KB, 4 * KB), fit=Fit(10**9, 2))
    assert verdicts(plan) == {"f0.bin": Verdict.KEEP, "f1.bin": Verdict.OFFLOAD, "f2.bin": Verdict.KEEP,
                              "f3.bin": Verdict.OFFLOAD}
    assert visible_count(plan.analysis, plan.decisions) == 2


def test_files_inside_an_attached_message_do_not_lower_the_count():
    inner = message(multipart(text(), attachment(blob(8 * KB), "inner.bin", "application/octet-stream")))
    raw = message(multipart(text(), rfc822(inner), attachment(blob(1 * KB, 1), "outer.bin",
                                                                 "application/octet-stream")))
    plan = plan_of(raw, fit=Fit(10**9, 1))
    # The attached message counts as one; offloading the file inside it would not help.
    assert verdicts(plan) == {"inner.bin": Verdict.KEEP, "outer.bin": Verdict.OFFLOAD}


def test_projected_size_counts_removed_files_notice_and_trace():
    plan = plan_of(files(30 * KB))
    (d,) = plan.decisions
    assert plan.projected_size == len(plan.analysis.data) + TRACE_BUDGET + PER_HEADER
    offloaded = dataclasses.replace(d, verdict=Verdict.OFFLOAD)
    notice = NOTICE_BUDGET + NOTICE_PER_FILE  # the notice's room for one changed file
    assert projected_size(plan.analysis, [offloaded]) == plan.projected_size - d.file.wire_size + notice
    assert projected_size(plan.analysis, [offloaded]) < plan.projected_size - 20 * KB


@pytest.mark.parametrize("verdict, build, name, declared", [
    (Verdict.EMPTY, lambda: b"", "empty.pdf", "application/pdf"),
    (Verdict.SPOOFED, samples.png, "invoice.pdf", "application/pdf"),
    (Verdict.BLOCKED, samples.pe_exe, "setup.exe", "application/octet-stream"),
])
def test_each_removal_follows_its_own_action(verdict, build, name, declared):
    raw = message(multipart(text(), attachment(build(), name, declared)))
    key = {Verdict.EMPTY: "on_empty", Verdict.SPOOFED: "on_spoofed", Verdict.BLOCKED: "on_blocked"}[verdict]
    stripped = plan_of(raw)
    assert stripped.refusal is None and verdicts(stripped) == {name: verdict}
    assert b"was removed" in render(stripped) and b"Content-Disposition: attachment" not in render(stripped)
    refused = plan_of(raw, **{key: "reject"})
    assert refused.refusal.startswith(f'550 5.7.1 Attachment "{name}" refused: ')
    # The other actions do not apply to it.
    others = {k: "reject" for k in ("on_empty", "on_spoofed", "on_blocked") if k != key}
    assert plan_of(raw, **others).refusal is None


def test_a_refusal_still_records_every_file():
    raw = message(multipart(text(), attachment(samples.pe_exe(), "setup.exe", "application/octet-stream"),
                            attachment(samples.pdf(), "a.pdf", "application/pdf")))
    plan = plan_of(raw, on_blocked="reject")
    assert plan.refusal is not None
    assert verdicts(plan) == {"setup.exe": Verdict.BLOCKED, "a.pdf": Verdict.KEEP}


def test_message_level_carriers_refuse_and_still_record_every_file():
    partial = message(multipart(text(), attachment(samples.pdf(), "a.pdf", "application/pdf"),
                                attachment(b"From: x\r\n\r\nhi", None, 'message/partial; id="a"; number=1')))
    plan = plan_of(partial)
    assert plan.refusal.startswith("550 5.7.1 Fragmented messages")
    assert verdicts(plan)["a.pdf"] is Verdict.KEEP
    assert plan_of(partial, on_partial="keep").refusal is None


def test_the_plan_is_a_value():
    plan = plan_of(files(10 * KB), offload_over_bytes=1 * KB)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.decisions[0].verdict = Verdict.KEEP  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.analysis.files[0].data = b""  # type: ignore[misc]
    # Deciding twice gives equal plans: nothing was left changed by the first.
    again = plan_of(files(10 * KB), offload_over_bytes=1 * KB)
    assert [(d.file.sha256, d.verdict, d.reason) for d in again.decisions] == \
        [(d.file.sha256, d.verdict, d.reason) for d in plan.decisions]


def test_refusals_before_any_file_is_judged_are_replies():
    bare = b"Subject: x\nContent-Type: text/plain\n\nhello\n"
    with pytest.raises(PermanentError) as err:
        decide(bare, DecidePolicy(bare_newlines=BareNewlines.REJECT))
    assert err.value.reply.startswith("554 5.5.2 ")
    assert decide(bare, DecidePolicy()).analysis.data == bare.replace(b"\n", b"\r\n")
    deep = message(multipart(multipart(multipart(text()))))
    with pytest.raises(PermanentError) as err:
        decide(deep, DecidePolicy(mime=scan.Limits(max_depth=2)))
    assert err.value.reply.startswith("550 5.6.0 Message structure refused: ")


def test_policy_values_are_checked_where_they_are_declared():
    with pytest.raises(ValueError, match="on_tnef"):
        PlanPolicy(on_tnef="maybe")
    with pytest.raises(ValueError, match="offload_over_bytes"):
        PlanPolicy(offload_over_bytes=0)


@pytest.mark.parametrize("field", [b"X-Smtp-Offload: v=1; action=unchanged", b"X-SMTP-OFFLOAD-Attachment: v=1",
                                   b"x-smtp-offload-warning: none"])
def test_our_headers_arriving_from_outside_are_forgeries_and_dropped(field):
    clean = files(1 * KB)
    plan = plan_of(field + b"\r\n" + clean)
    assert plan.analysis.forged_headers and render(plan) == clean
    assert not plan_of(clean).analysis.forged_headers
