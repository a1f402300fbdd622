"""The proxy with storage.backend = "s3" (moto's server on loopback), end to end over SMTP and HTTP."""

from __future__ import annotations

import hashlib
import re
import time
import urllib.parse

from tests.support.http import get
from tests.support.mail import big_message
from tests.support.net import free_port
from tests.support.proc import refused_start
from tests.support.relayed import LINK, assert_fails_open, attachment_payloads, body_text


def s3_overrides(s3server, bucket: str, **links) -> dict:
    return {"storage": {"backend": "s3"},
            "storage.s3": {"bucket": bucket, "endpoint_url": s3server.endpoint, "region": "us-east-1",
                           "prefix": "offload"},
            "policy": {"offload_over_bytes": 50_000},
            **({"links": links} if links else {})}


def stored_keys(s3server, bucket: str) -> list[str]:
    return [k for k in s3server.keys(bucket) if "/." not in k]



def test_redirect_mode_mints_a_fresh_short_url_per_click(make_proxy, sink, s3server):
    bucket = s3server.new_bucket()
    proxy = make_proxy(s3_overrides(s3server, bucket, click_ttl_seconds=120))
    msg, data = big_message()
    assert proxy.send(msg)[0] == 250
    got = sink.messages[0].content
    assert attachment_payloads(got) == {}
    (link,) = set(LINK.findall(body_text(got).encode()))
    link = link.decode()
    assert link.startswith(f"http://127.0.0.1:{proxy.links_port}/f/")
    assert s3server.endpoint not in body_text(got)  # the mail never holds a direct storage URL
    status, _, page = get(link)
    assert status == 200 and b"scan.pdf" in page
    locations = []
    for _ in range(2):
        status, headers, _ = get(link.rstrip("/") + "/download", follow=False)
        assert status in (302, 303), status
        locations.append(headers["Location"])
        time.sleep(1.1)  # presigned URLs carry a second-resolution timestamp
    assert locations[0] != locations[1]
    for loc in locations:
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(loc).query)
        assert q["X-Amz-Expires"] == ["120"] and loc.startswith(s3server.endpoint)
        status, headers, body = get(loc)
        assert status == 200 and hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()
    (key,) = stored_keys(s3server, bucket)
    assert key.startswith("offload/") and key.endswith("/scan.pdf")


def test_presigned_mode_puts_the_storage_url_in_the_mail(make_proxy, sink, s3server):
    bucket = s3server.new_bucket()
    proxy = make_proxy(s3_overrides(s3server, bucket, mode="presigned", ttl_seconds=3600))
    msg, data = big_message()
    assert proxy.send(msg)[0] == 250
    notice = body_text(sink.messages[0].content)
    (url,) = re.findall(r"http://127\.0\.0\.1:\d+/\S+X-Amz-Signature=\w+", notice)
    assert url.startswith(s3server.endpoint)
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["X-Amz-Expires"] == ["3600"]
    status, _, body = get(url)
    assert status == 200 and body == data


def test_retried_delivery_stores_one_copy(make_proxy, sink, s3server):
    bucket = s3server.new_bucket()
    proxy = make_proxy(s3_overrides(s3server, bucket))
    msg, _ = big_message()
    assert proxy.send(msg)[0] == 250
    assert proxy.send(msg)[0] == 250  # the sender retried (e.g. it never saw our 250)
    keys = [e["storage_key"] for e in proxy.events("attachment")]
    assert len(keys) == 2 and keys[0] == keys[1]
    assert stored_keys(s3server, bucket) == [keys[0]]


def test_refused_message_leaves_no_orphans(make_proxy, sink, s3server):
    bucket = s3server.new_bucket()
    proxy = make_proxy(s3_overrides(s3server, bucket))
    msg, _ = big_message()
    sink.recorder.data_reply = "554 5.7.1 Rejected by policy"
    assert proxy.send(msg)[0] == 554
    sink.recorder.data_reply = "451 4.3.0 Try later"
    assert proxy.send(msg)[0] == 451
    assert [e["verdict"] for e in proxy.events("attachment")] == ["offload", "offload"]
    assert stored_keys(s3server, bucket) == []


def test_tenant_segment_from_recipient_domain(make_proxy, sink, s3server):
    bucket = s3server.new_bucket()
    overrides = s3_overrides(s3server, bucket)
    overrides["storage"]["tenant"] = "recipient-domain"
    proxy = make_proxy(overrides)
    assert proxy.send(big_message()[0])[0] == 250
    (key,) = stored_keys(s3server, bucket)
    assert key.startswith("offload/example.com/")


def test_s3_unreachable_fails_open(make_proxy, sink, s3server):
    overrides = s3_overrides(s3server, "any-bucket")
    overrides["storage.s3"].update(endpoint_url=f"http://127.0.0.1:{free_port()}", connect_timeout=1, read_timeout=1)
    assert_fails_open(make_proxy(overrides), sink, *big_message())


def test_wrong_bucket_stops_the_start_with_one_line(tmp_path, s3server, sink):
    assert "does not exist" in refused_start(tmp_path, sink.port, s3_overrides(s3server, "no-such-bucket-x"))


def test_presigned_mode_warns_about_temporary_credentials(make_proxy, sink, s3server):
    bucket = s3server.new_bucket()
    proxy = make_proxy(s3_overrides(s3server, bucket, mode="presigned", ttl_seconds=3600),
                       env={"AWS_SESSION_TOKEN": "an-sts-session-token"})
    (ev,) = proxy.events("presigned_links_with_temporary_credentials")
    assert ev["level"] == "warning" and "redirect" in ev["message"]
    calm = make_proxy(s3_overrides(s3server, bucket, mode="presigned", ttl_seconds=3600))
    assert calm.events("presigned_links_with_temporary_credentials") == []


def test_tenant_segment_from_a_header(make_proxy, sink, s3server):
    bucket = s3server.new_bucket()
    overrides = s3_overrides(s3server, bucket)
    overrides["storage"]["tenant"] = "header:X-Customer-Id"
    proxy = make_proxy(overrides)
    msg, _ = big_message()
    msg = b"X-Customer-Id: CUST-998877\r\n" + msg
    assert proxy.send(msg)[0] == 250
    (key,) = stored_keys(s3server, bucket)
    assert key.startswith("offload/cust-998877/")
