"""API jobs across instances: two proxies sharing one S3 bucket (moto's server), one killed
mid-job; and the API under concurrent load while SMTP keeps flowing."""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from smtp_offload.harness import files
from smtp_offload.harness.mime import attachment, message, multipart, text
from tests.support.api import KEY, call, poll, upload
from tests.support.http import get

SECRET = "shared-link-secret-for-both-instances-0123456789"


def _stopped(pid: int) -> bool:
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state in ("T", "t")


def _s3(s3server, bucket: str, **api) -> dict:
    return {"storage": {"backend": "s3"},
            "storage.s3": {"bucket": bucket, "endpoint_url": s3server.endpoint, "region": "us-east-1"},
            "links": {"api_keys": [KEY], "secret": SECRET}, "api": api}


def _accepted_then_stopped(make_proxy, s3server, bucket: str, data: bytes):
    """Instances A and B sharing `bucket`; A accepts an async upload of `data` and stops itself
    right after its 202, before any work (the failpoint). Returns (a, b, job id)."""
    overrides = _s3(s3server, bucket, job_lease_seconds=1.0)
    a = make_proxy(overrides, env={"SMTP_OFFLOAD_FAILPOINT": "job-accepted"})
    b = make_proxy(overrides)
    status, _h, accepted = upload(f"http://127.0.0.1:{a.links_port}", data, "scan.pdf", Prefer="respond-async")
    assert status == 202
    for _ in range(600):
        if _stopped(a.proc.pid):
            break
        time.sleep(0.05)
    assert _stopped(a.proc.pid)
    return a, b, accepted["jobId"]


def test_a_job_whose_instance_dies_is_finished_by_another(make_proxy, s3server):
    bucket = s3server.new_bucket()
    data = files.big_pdf(300_000)
    a, b, job_id = _accepted_then_stopped(make_proxy, s3server, bucket, data)
    a.proc.kill()  # then it dies, as a crash would
    a.proc.wait()
    client = s3server.client()
    record = json.loads(client.get_object(Bucket=bucket, Key=f"smtp-offload/.records/jobs/{job_id}.json")["Body"].read())
    assert record["status"] == "PENDING"

    base_b = f"http://127.0.0.1:{b.links_port}"
    done = poll(base_b, job_id)  # B answers for A's job, and finishes it once A's lease ran out
    assert done["status"] == "COMPLETE" and done["sha256"] == hashlib.sha256(data).hexdigest()
    objects = [k for k in s3server.keys(bucket) if "/.records/" not in k]
    assert objects == [done["s3Key"]]
    answer = json.loads(client.get_object(Bucket=bucket, Key=f"smtp-offload/.records/answers/{job_id}.json")["Body"].read())
    assert answer["status"] == "COMPLETE" and answer["owner"] != "" and str(a.proc.pid) not in answer["owner"]
    assert [e for e in b.events("api_job_taken_over") if e["job_id"] == job_id]
    # The staged body is gone, and asking again changes nothing.
    assert not [k for k in s3server.keys(bucket) if "/.records/bodies/" in k]
    assert poll(base_b, job_id)["s3Key"] == done["s3Key"]
    status, _h, page = get(done["downloadUrl"])
    assert status == 200
    status, _h, got = get(done["downloadUrl"] + "/download")
    assert status == 200 and got == data


def test_any_instance_answers_for_a_finished_job(make_proxy, s3server):
    bucket = s3server.new_bucket()
    a, b = make_proxy(_s3(s3server, bucket)), make_proxy(_s3(s3server, bucket))
    status, _h, accepted = upload(f"http://127.0.0.1:{a.links_port}", files.pdf(), "a.pdf", Prefer="respond-async")
    assert status == 202
    done_a = poll(f"http://127.0.0.1:{a.links_port}", accepted["jobId"])
    done_b = poll(f"http://127.0.0.1:{b.links_port}", accepted["jobId"])
    assert done_a == done_b and done_a["status"] == "COMPLETE"
    # Idempotency holds across instances too.
    first = upload(f"http://127.0.0.1:{a.links_port}", files.pdf(), "b.pdf", Idempotency_Key="retry-me")
    again = upload(f"http://127.0.0.1:{b.links_port}", files.pdf(), "b.pdf", Idempotency_Key="retry-me")
    assert first[0] == 200 and first[2] == again[2]
    assert len([k for k in s3server.keys(bucket) if k.endswith("/b.pdf")]) == 1


def test_twenty_concurrent_uploads_while_smtp_keeps_flowing(make_proxy, sink):
    p = make_proxy({"links": {"api_keys": [KEY]}, "policy": {"offload_over_bytes": 100_000}})
    base = f"http://127.0.0.1:{p.links_port}"
    payloads = [files.big_pdf(400_000 + i * 1000) for i in range(20)]
    mail = message(multipart(text(), attachment(files.big_pdf(200_000), "report.pdf", "application/pdf")))

    def one_upload(i: int):
        return upload(base, payloads[i], f"file-{i}.pdf", X_CustomerId=f"c{i % 3}")

    def one_mail(i: int):
        return p.send(mail)[0]

    with ThreadPoolExecutor(max_workers=26) as pool:
        uploads = [pool.submit(one_upload, i) for i in range(20)]
        mails = [pool.submit(one_mail, i) for i in range(6)]
        results = [f.result() for f in uploads]
        codes = [f.result() for f in mails]
    assert [r[0] for r in results] == [200] * 20
    assert [r[2]["sha256"] for r in results] == [hashlib.sha256(d).hexdigest() for d in payloads]
    assert len({r[2]["s3Key"] for r in results}) == 20
    assert codes == [250] * 6 and len(sink.messages) == 6
    assert all(b"report.pdf" in m.content and len(m.content) < 100_000 for m in sink.messages)  # offloaded


def test_records_in_s3_are_never_reachable_through_a_link(make_proxy, s3server):
    bucket = s3server.new_bucket()
    p = make_proxy(_s3(s3server, bucket))
    base = f"http://127.0.0.1:{p.links_port}"
    assert upload(base, files.pdf(), "a.pdf", Idempotency_Key="k1")[0] == 200
    status, _h, accepted = upload(base, files.pdf(), "b.pdf", Prefer="respond-async")
    poll(base, accepted["jobId"])
    records = [k for k in s3server.keys(bucket) if "/.records/" in k]
    assert records  # the idempotency record and the job record
    for key in records + ["smtp-offload/.revoked/x", "smtp-offload/../x", "smtp-offload//x"]:
        status, _h, body = call(base, "POST", "/api/v1/links/refresh", json.dumps({"key": key}).encode())
        assert status == 404, (key, body)


def test_concurrent_polls_take_a_dead_instances_job_over_once_and_a_late_finish_changes_nothing(make_proxy, s3server):
    import os
    import signal

    bucket = s3server.new_bucket()
    a, b, job_id = _accepted_then_stopped(make_proxy, s3server, bucket, files.big_pdf(200_000))
    base_b = f"http://127.0.0.1:{b.links_port}"
    # A is paused (a long GC, a VM migration), not dead.
    time.sleep(1.5)  # past the lease: A's heartbeat is older than job_lease_seconds
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _i: call(base_b, "GET", f"/api/v1/jobs/{job_id}")[0], range(8)))
    assert answers == [200] * 8
    done = poll(base_b, job_id)
    assert done["status"] == "COMPLETE"
    assert len([e for e in b.events("api_job_taken_over") if e["job_id"] == job_id]) == 1
    # A wakes up and finishes too: B's answer stands, and there is still one object.
    os.kill(a.proc.pid, signal.SIGCONT)
    for _ in range(600):
        if a.events("api_job_already_finished") or a.events("api_job"):
            break
        time.sleep(0.05)
    assert [e["job_id"] for e in a.events("api_job_already_finished")] == [job_id] and not a.events("api_job")
    assert poll(base_b, job_id) == done
    assert [k for k in s3server.keys(bucket) if "/.records/" not in k] == [done["s3Key"]]
