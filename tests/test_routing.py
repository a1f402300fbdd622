"""Data residency end to end: the proxy routes each customer's files to the store the routing
table names (storage.routes -> storage.stores), links and the API find them there, and one
store failing leaves the other customers alone."""

from __future__ import annotations

import hashlib
import json
import os
import urllib.parse

import pytest

from smtp_offload import config as config_mod
from smtp_offload.errors import ConfigError
from tests.support import samples
from tests.support.api import KEY, call, upload
from tests.support.http import get
from tests.support.mail import attachment, message, multipart, text
from tests.support.net import free_port
from tests.support.relayed import LINK, attachment_payloads, body_text

EU, US = "acme-eu", "globex-us"


def routed(s3server, eu_bucket: str, *, eu_endpoint: str | None = None, **policy) -> dict:
    """Default store local (the Proxy's), customer acme-eu's files to S3 bucket `eu_bucket`."""
    return {
        "storage": {"tenant": "header:X-Customer-Id", "routes": {EU: "eu", "Example.DE": "eu"}},
        "storage.stores.eu": {"backend": "s3"},
        "storage.stores.eu.s3": {"bucket": eu_bucket, "endpoint_url": eu_endpoint or s3server.endpoint,
                                 "region": "us-east-1", "prefix": "eu-files", "connect_timeout": 1},
        "policy": {"offload_over_bytes": 50_000, **policy},
        "links": {"api_keys": [KEY]},
    }


def mail_for(customer: str, data: bytes, name: str = "scan.pdf") -> bytes:
    return message(multipart(text(), attachment(data, name, "application/pdf")),
                   extra=[("X-Customer-Id", customer)])


def the_link(raw: bytes) -> str:
    (link,) = set(LINK.findall(body_text(raw).encode()))
    return link.decode()


def local_files(proxy) -> list[str]:
    return sorted(str(p.relative_to(proxy.store)) for p in proxy.store.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(proxy.store).parts))


def token_of(link: str) -> str:
    return urllib.parse.unquote(link.rstrip("/").rsplit("/", 1)[-1])


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_two_customers_files_go_to_two_stores_and_one_link_is_revoked(make_proxy, sink, s3server):
    bucket = s3server.new_bucket()
    proxy = make_proxy(routed(s3server, bucket))
    eu_data, us_data = samples.big_pdf(200_000), samples.big_pdf(210_000)
    assert proxy.send(mail_for(EU, eu_data))[0] == 250
    assert proxy.send(mail_for(US, us_data))[0] == 250
    eu_mail, us_mail = (m.content for m in sink.messages)
    assert attachment_payloads(eu_mail) == {} and attachment_payloads(us_mail) == {}
    eu_link, us_link = the_link(eu_mail), the_link(us_mail)

    # Where the bytes are: acme-eu's only in the EU bucket, globex-us's only in the default store.
    eu_keys = [k for k in s3server.keys(bucket) if "/." not in k]
    assert len(eu_keys) == 1 and eu_keys[0].startswith(f"eu-files/{EU}/") and eu_keys[0].endswith("/scan.pdf")
    body = s3server.client().get_object(Bucket=bucket, Key=eu_keys[0])["Body"].read()
    assert sha(body) == sha(eu_data)
    files = local_files(proxy)
    assert len(files) == 1 and files[0].startswith(f"{US}/") and (proxy.store / files[0]).read_bytes() == us_data

    # Both links download their own bytes, wherever they were routed.
    for link, data in ((eu_link, eu_data), (us_link, us_data)):
        status, _, page = get(link)
        assert status == 200 and b"scan.pdf" in page
        status, _, got = get(link.rstrip("/") + "/download")
        assert status == 200 and sha(got) == sha(data)

    # The API finds the routed file: show and refresh by token, refresh by key.
    base = f"http://127.0.0.1:{proxy.links_port}"
    status, _, shown = call(base, "GET", "/api/v1/links/show?token=" + urllib.parse.quote(token_of(eu_link)))
    assert status == 200 and shown["object"]["tenant"] == EU and shown["object"]["sha256"] == sha(eu_data)
    assert shown["key"].startswith("@eu/")
    status, _, fresh = call(base, "POST", "/api/v1/links/refresh", json.dumps({"key": shown["key"]}).encode(),
                            {"Content-Type": "application/json"})
    assert status == 200, fresh
    assert sha(get(fresh["url"].rstrip("/") + "/download")[2]) == sha(eu_data)

    # Revoke acme-eu's link: that one is dead, the refreshed one and globex-us's still work.
    status, _, out = call(base, "POST", "/api/v1/links/revoke", json.dumps({"token": token_of(eu_link)}).encode(),
                          {"Content-Type": "application/json"})
    assert status == 200 and out["revoked"] == shown["token_id"]
    revoked_marks = [k for k in s3server.keys(bucket) if "/.revoked/" in k]
    assert revoked_marks == [f"eu-files/.revoked/{shown['token_id']}"]  # recorded beside the file
    assert get(eu_link.rstrip("/") + "/download")[0] == 410
    assert get(eu_link)[0] == 410
    assert sha(get(us_link.rstrip("/") + "/download")[2]) == sha(us_data)
    assert sha(get(fresh["url"].rstrip("/") + "/download")[2]) == sha(eu_data)


def test_a_route_by_domain_matches_whatever_the_case_and_the_api_routes_by_customer(make_proxy, sink, s3server):
    bucket = s3server.new_bucket()
    proxy = make_proxy(routed(s3server, bucket))
    base = f"http://127.0.0.1:{proxy.links_port}"
    assert proxy.send(mail_for("example.de", samples.big_pdf(120_000)))[0] == 250  # route written "Example.DE"
    status, _, out = upload(base, samples.pdf(), "form.pdf", X_CustomerId=EU)
    assert status == 200, out
    names = sorted(k.rsplit("/", 1)[-1] for k in s3server.keys(bucket) if "/." not in k)
    assert names == ["form.pdf", "scan.pdf"]
    assert local_files(proxy) == []
    assert out["s3Key"].startswith("@eu/")
    status, _, got = get(out["downloadUrl"].rstrip("/") + "/download")
    assert status == 200 and got == samples.pdf()


def test_one_store_down_leaves_the_other_customers_offloading(make_proxy, sink, s3server):
    dead = f"http://127.0.0.1:{free_port()}"
    proxy = make_proxy(routed(s3server, "eu-bucket-down", eu_endpoint=dead, breaker_failures=2))
    events_before = len(proxy.events("storage_unavailable_at_start"))
    assert events_before == 1  # said at start, and started anyway
    eu_data, us_data = samples.big_pdf(100_000), samples.big_pdf(110_000)
    for _ in range(3):  # enough to open the EU store's breaker
        assert proxy.send(mail_for(EU, eu_data))[0] == 250
    for raw in (m.content for m in sink.messages):
        assert sha(attachment_payloads(raw)["scan.pdf"]) == sha(eu_data)  # fail open: kept in the message
    assert proxy.send(mail_for(US, us_data))[0] == 250
    us_mail = sink.messages[-1].content
    assert attachment_payloads(us_mail) == {}
    assert sha(get(the_link(us_mail).rstrip("/") + "/download")[2]) == sha(us_data)
    breakers = [(e["breaker"], e["state"]) for e in proxy.events("circuit_breaker")]
    assert ("storage:eu", "open") in breakers and not any(b == "storage" for b, _ in breakers)
    # Ready: the default store and the downstream work; the EU store's state is reported.
    status, _, body = get(f"http://127.0.0.1:{proxy.links_port}/readyz")
    assert status == 200
    ready = json.loads(body)
    assert ready["storage"] == "ok" and ready["storage_eu"] in ("failed", "timeout")


@pytest.mark.parametrize("storage, message", [
    ({"routes": {"acme": "nowhere"}}, "storage.routes.acme: no store named 'nowhere'"),
    ({"stores": {"EU": {"backend": "local"}}}, "storage.stores.EU: a store name is"),
    ({"stores": {"eu": {"backend": "s3"}}}, "storage.stores.eu.s3.bucket: required"),
    ({"stores": {"eu": {"backend": "s3", "s3": {"bucket": "b-eu", "colour": 1}}}},
     "storage.stores.eu.s3.colour: unknown key"),
    ({"stores": {"eu": {"backend": "ftp"}}}, "storage.stores.eu.backend: must be one of"),
    ({"stores": ["eu"]}, "storage.stores: expected a table"),
    ({"routes": {"acme": 3}}, "storage.routes.acme: expected a string"),
])
def test_routing_config_errors_name_the_key(tmp_path, storage, message):
    path = tmp_path / "c.toml"
    lines = ["[storage]"]
    for k, v in storage.items():
        lines.append(f"{k} = {config_mod.toml_value(v)}")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as caught:
        config_mod.load(path, env={})
    assert message in str(caught.value)


def test_routes_round_trip_through_the_config_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(config_mod.dump_sections({
        "storage": {"routes": {"example.de": "eu", EU: "eu"}},
        "storage.stores.eu": {"backend": "local"},
        "storage.stores.eu.local": {"path": str(tmp_path / "eu")},
    }))
    cfg = config_mod.load(path, env={})
    assert cfg.storage.routes == {"example.de": "eu", EU: "eu"}
    assert cfg.storage.stores["eu"].local.path == str(tmp_path / "eu")
    assert os.fspath(cfg.storage.local.path) == "var/store"


def test_check_config_checks_every_named_store_online(tmp_path, s3server):
    import subprocess
    import sys

    good = s3server.new_bucket()
    path = tmp_path / "c.toml"
    path.write_text(config_mod.dump_sections({
        "storage": {"routes": {EU: "eu", US: "us"}},
        "storage.local": {"path": str(tmp_path / "store")},
        "storage.stores.eu": {"backend": "s3"},
        "storage.stores.eu.s3": {"bucket": good, "endpoint_url": s3server.endpoint, "region": "us-east-1"},
        "storage.stores.us": {"backend": "s3"},
        "storage.stores.us.s3": {"bucket": "down-bucket", "endpoint_url": f"http://127.0.0.1:{free_port()}",
                                 "region": "us-east-1", "connect_timeout": 1},
    }))
    r = subprocess.run([sys.executable, "-m", "smtp_offload", "check-config", "--config", str(path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert f"storage.stores.eu (s3://{good}/smtp-offload at {s3server.endpoint}): reachable and writable" in r.stdout
    assert "smtp-offload: storage.stores.us (s3://down-bucket/" in r.stderr and "cannot reach" in r.stderr
    assert "Traceback" not in r.stderr
