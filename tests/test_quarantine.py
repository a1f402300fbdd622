"""The quarantine end to end: the proxy process strips a spoofed file and keeps it; the real
command line (`smtp-offload quarantine ...`, a subprocess with the proxy's config) and the HTTP
API list, release and delete it; a release arrives at the sink, threaded to the original."""

from __future__ import annotations

import email
import email.policy
import hashlib
import json
import re
import subprocess
import sys
import time
import unicodedata
from urllib.parse import quote
from datetime import datetime, timedelta, timezone

from tests.support import samples
from tests.support.api import KEY, call
from tests.support.http import get
from tests.support.mail import attachment, b64, entity, message, multipart, text
from tests.support.proc import dead_s3
from tests.support.relayed import EXE, LINK, assert_exe_gone, attachment_payloads, body_text, relay

HELD = re.compile(r"an\s+administrator\s+can\s+release\s+it\s+with\s+quarantine\s+id\s+([a-z0-9-]+)\.")
ON = {"policy": {"quarantine": True}}
SHA = hashlib.sha256(EXE).hexdigest()


def cli(proxy, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smtp_offload", "quarantine", *args, "--config", str(proxy.config)],
                          capture_output=True, text=True, cwd=proxy.tmp, timeout=120)


def listed(proxy) -> list[dict]:
    r = cli(proxy, "list", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def spoofed(message_id: str = "<orig-1@sender.test>", to: str = "support@example.com", data: bytes = EXE,
            subject: str = "Invoice March") -> bytes:
    body = multipart(text(), text("<p>Please see the attached invoice.</p>", "html"), subtype="alternative")
    return message(multipart(body, attachment(data, "invoice.pdf", "application/pdf"),
                             attachment(b"", "empty.txt", "text/plain")),
                   subject=subject, to=to, message_id=message_id)


def held_id(relayed: bytes) -> str:
    (qid,) = HELD.findall(body_text(relayed))
    assert f"quarantine id {qid}" in body_text(relayed, "html")
    return qid


def parsed(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


def test_a_stripped_file_is_held_listed_released_and_deleted_from_the_command_line(make_proxy, sink):
    proxy = make_proxy(ON)
    got = relay(proxy, sink, spoofed())
    assert_exe_gone(got)
    qid = held_id(got)  # one id: the empty file was stripped, not held
    assert "A copy is held in quarantine" in body_text(got)

    (item,) = listed(proxy)
    assert item["id"] == qid
    assert {k: item[k] for k in ("fileName", "fileSize", "sha256", "verdict", "subject", "messageId", "sender",
                                 "recipients", "released", "tenant")} == {
        "fileName": "invoice.pdf", "fileSize": len(EXE), "sha256": SHA, "verdict": "blocked",
        "subject": "Invoice March", "messageId": "<orig-1@sender.test>", "sender": "customer@sender.test",
        "recipients": ["support@example.com"], "released": False, "tenant": None}
    assert "customer@sender.test" in item["from"] and item["detectedType"] != "application/pdf" and item["reason"]
    received = datetime.fromisoformat(item["receivedAt"].replace("Z", "+00:00"))
    assert datetime.fromisoformat(item["expiresAt"].replace("Z", "+00:00")) - received == timedelta(days=30)
    table = cli(proxy, "list")
    assert table.returncode == 0 and qid in table.stdout and "invoice.pdf" in table.stdout and "blocked" in table.stdout
    assert all(h in table.stdout.splitlines()[0] for h in ("id", "received", "from", "to", "file", "verdict", "reason"))
    # Kept where no link reaches: only under the store's records.
    outside = [p for p in proxy.store.rglob("*") if p.is_file() and ".records" not in p.parts]
    assert not [p for p in outside if EXE in p.read_bytes()]
    assert [e["id"] for e in proxy.events("quarantine_hold")] == [qid]

    shown = cli(proxy, "show", qid)
    assert shown.returncode == 0 and json.loads(shown.stdout) == item

    # The downstream refusing the release: a clear error, nothing marked released.
    sink.recorder.data_reply = "554 5.7.1 Not today"
    refused = cli(proxy, "release", qid)
    assert refused.returncode == 1 and "Not today" in refused.stderr and "nothing was marked released" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert listed(proxy)[0]["released"] is False
    sink.recorder.data_reply = None

    count = len(sink.messages)
    done = cli(proxy, "release", qid)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["released"] is True and answer["releasedBy"].startswith("cli")
    assert len(sink.messages) == count + 1
    out = sink.messages[-1]
    assert out.mail_from == "postmaster@mx.test" and out.rcpt_tos == ["support@example.com"]
    msg = parsed(out.content)
    assert msg["In-Reply-To"] == msg["References"] == "<orig-1@sender.test>"
    assert msg["From"] == "postmaster@mx.test" and "Invoice March" in msg["Subject"]
    (payload,) = attachment_payloads(out.content).values()
    assert hashlib.sha256(payload).hexdigest() == SHA
    note = msg.get_body(("plain",)).get_content()
    assert "blocked" in note and item["reason"] in note and answer["releasedBy"] in note
    # The command line's audit events go to its stderr.
    (ev,) = [e for e in map(json.loads, done.stderr.splitlines()) if e["event"] == "quarantine_release"]
    assert ev["id"] == qid and ev["by"] == answer["releasedBy"]

    again = cli(proxy, "release", qid)
    assert again.returncode == 1 and "already released" in again.stderr and len(sink.messages) == count + 1
    assert cli(proxy, "release", qid, "--force").returncode == 0 and len(sink.messages) == count + 2

    deleted = cli(proxy, "delete", qid)
    assert deleted.returncode == 0 and json.loads(deleted.stdout) == {"id": qid, "deleted": True}
    assert listed(proxy) == []
    assert not [p for p in proxy.store.rglob("*") if p.is_file() and EXE in p.read_bytes()]
    for args in (("show", qid), ("release", qid), ("delete", qid), ("show", "../../etc/passwd")):
        r = cli(proxy, *args)
        assert r.returncode == 1 and "no such quarantined file" in r.stderr and "Traceback" not in r.stderr, args


def test_release_and_delete_over_the_api_and_a_large_file_comes_as_a_link(make_proxy, sink):
    big = EXE + b"\0" * 30_000  # still an executable, now above the offload threshold
    proxy = make_proxy({"policy": {"quarantine": True, "offload_over_bytes": 10_000, "quarantine_sender":
                                   "quarantine@example.com"},
                        "links": {"api_keys": [KEY, {"key": "links-only-key-0123456789abcdef", "scopes": ["links"]}]}})
    base = f"http://127.0.0.1:{proxy.links_port}"
    qid = held_id(relay(proxy, sink, spoofed(data=big)))
    other = held_id(relay(proxy, sink, spoofed("<orig-2@sender.test>")))

    status, _, body = call(base, "GET", "/api/v1/quarantine")
    assert status == 200 and [i["id"] for i in body["items"]] == [qid, other]
    status, _, body = call(base, "GET", f"/api/v1/quarantine/{qid}")
    assert status == 200 and body["sha256"] == hashlib.sha256(big).hexdigest() and body["fileSize"] == len(big)
    for method, path in (("GET", "/api/v1/quarantine"), ("GET", f"/api/v1/quarantine/{qid}"),
                         ("POST", f"/api/v1/quarantine/{qid}/release"), ("DELETE", f"/api/v1/quarantine/{qid}")):
        status, _, body = call(base, method, path, key="links-only-key-0123456789abcdef")
        assert status == 403 and body["error"] == "forbidden", (method, path)
    status, _, body = call(base, "GET", "/api/v1/quarantine/0123456789abcdef")
    assert status == 404 and body["error"] == "not_found"
    status, _, body = call(base, "POST", f"/api/v1/quarantine/{qid}/release?force=maybe")
    assert status == 400 and body["error"] == "bad_request"

    status, _, body = call(base, "POST", f"/api/v1/quarantine/{qid}/release")
    assert status == 200 and body["released"] is True and body["releasedBy"].startswith("key-")
    out = sink.messages[-1]
    assert out.mail_from == "quarantine@example.com" and out.rcpt_tos == ["support@example.com"]
    assert parsed(out.content)["In-Reply-To"] == "<orig-1@sender.test>"
    assert attachment_payloads(out.content) == {}  # too large to attach: a link instead
    note = parsed(out.content).get_body(("plain",)).get_content()
    (link,) = {m.decode() for m in LINK.findall(note.encode())}
    status, _, downloaded = get(link.rstrip("/") + "/download")
    assert status == 200 and downloaded == big
    (ev,) = proxy.events("quarantine_release")
    assert ev["id"] == qid and ev["by"] == body["releasedBy"]
    status, _, body = call(base, "POST", f"/api/v1/quarantine/{qid}/release")
    assert status == 409 and body["error"] == "already_released"

    sink.recorder.data_reply = "451 4.3.0 Try later"
    status, _, body = call(base, "POST", f"/api/v1/quarantine/{other}/release")
    assert status == 502 and body["error"] == "downstream_refused" and "Try later" in body["message"]
    assert call(base, "GET", f"/api/v1/quarantine/{other}")[2]["released"] is False
    sink.recorder.data_reply = None

    status, _, body = call(base, "DELETE", f"/api/v1/quarantine/{other}")
    assert status == 200 and body == {"id": other, "deleted": True}
    assert call(base, "GET", f"/api/v1/quarantine/{other}")[0] == 404
    assert [e["id"] for e in proxy.events("quarantine_delete")] == [other]


def test_a_key_bound_to_a_customer_sees_only_that_tenants_files(make_proxy, sink):
    bound = "bound-key-for-tests-0123456789abcdef"
    proxy = make_proxy({"policy": {"quarantine": True},
                        "server": {"accepted_domains": ["example.com", "other.test"]},
                        "storage": {"tenant": "recipient-domain"},
                        "links": {"api_keys": [KEY, {"key": bound, "customer": "other.test"}]}})
    base = f"http://127.0.0.1:{proxy.links_port}"
    # A picture named .pdf: spoofed (an executable is blocked).
    code, _ = proxy.send(spoofed("<a@sender.test>", to="help@other.test", data=samples.png()),
                         rcpts=("help@other.test",))
    assert code == 250
    mine = held_id(sink.messages[-1].content)
    theirs = held_id(relay(proxy, sink, spoofed("<b@sender.test>")))

    status, _, body = call(base, "GET", "/api/v1/quarantine", key=bound)
    assert status == 200 and [(i["id"], i["tenant"], i["verdict"]) for i in body["items"]] == [
        (mine, "other.test", "spoofed")]
    assert len(call(base, "GET", "/api/v1/quarantine")[2]["items"]) == 2  # an unbound key sees all
    for method, path in (("GET", f"/api/v1/quarantine/{theirs}"), ("DELETE", f"/api/v1/quarantine/{theirs}")):
        status, _, body = call(base, method, path, key=bound)
        assert status == 404 and body["error"] == "not_found", (method, path)
    assert call(base, "GET", f"/api/v1/quarantine/{mine}", key=bound)[0] == 200
    # Releasing what the gateway judged unsafe is for an administrator, not for the customer's
    # own key: refused for any id (its own or not, so it learns nothing of others' either).
    count = len(sink.messages)
    for qid in (mine, theirs, "0123456789abcdef"):
        status, _, body = call(base, "POST", f"/api/v1/quarantine/{qid}/release", key=bound)
        assert status == 403 and body["error"] == "forbidden" and "administrator" in body["message"], qid
    assert len(sink.messages) == count and call(base, "GET", f"/api/v1/quarantine/{mine}")[2]["released"] is False
    status, _, body = call(base, "POST", f"/api/v1/quarantine/{mine}/release")
    assert status == 200 and sink.messages[-1].rcpt_tos == ["help@other.test"]
    assert len(listed(proxy)) == 2
    status, _, body = call(base, "DELETE", f"/api/v1/quarantine/{mine}", key=bound)
    assert status == 200 and [i["id"] for i in listed(proxy)] == [theirs]


def _age(proxy, qid: str, days: int) -> None:
    path = proxy.store / ".records" / "quarantine" / f"{qid}.json"
    record = json.loads(path.read_text())
    record["received"] = (datetime.now(timezone.utc) - timedelta(days=days)).isoformat(timespec="seconds")
    path.write_text(json.dumps(record))


def test_retention_purges_old_files_from_the_command_line_and_in_every_instance(make_proxy, sink):
    proxy = make_proxy({"policy": {"quarantine": True, "quarantine_retention_days": 7}})
    old = held_id(relay(proxy, sink, spoofed("<old@sender.test>")))
    new = held_id(relay(proxy, sink, spoofed("<new@sender.test>")))
    _age(proxy, old, 8)
    r = cli(proxy, "purge")
    assert r.returncode == 0 and json.loads(r.stdout) == {"purged": [old]}
    assert [i["id"] for i in listed(proxy)] == [new]
    assert not (proxy.store / ".records" / "quarantined" / old).exists()

    # The running proxy purges by itself: at start, then hourly.
    _age(proxy, new, 8)
    proxy.stop()
    proxy.start()
    for _ in range(300):
        if proxy.events("quarantine_purge"):
            break
        time.sleep(0.1)
    (ev,) = proxy.events("quarantine_purge")
    assert ev["id"] == new and listed(proxy) == []


def test_nothing_is_held_with_the_policy_off(make_proxy, sink):
    proxy = make_proxy()
    got = relay(proxy, sink, spoofed())
    assert_exe_gone(got)
    assert not HELD.search(body_text(got)) and listed(proxy) == []


def test_store_down_at_hold_time_still_relays_with_the_file_stripped(make_proxy, sink, s3server):
    proxy = make_proxy(dead_s3(quarantine=True))
    got = relay(proxy, sink, spoofed())
    assert_exe_gone(got)
    note = body_text(got)
    assert "invoice.pdf" in note and "quarantine" not in note.lower()
    (ev,) = proxy.events("quarantine_hold_failed")
    assert ev["level"] == "warning" and ev["sha256"] == SHA
    assert not [e for e in proxy.events() if e.get("level") in ("error", "critical")]


def test_a_message_the_downstream_refuses_leaves_nothing_held(make_proxy, sink):
    proxy = make_proxy(ON)
    sink.recorder.data_reply = "554 5.7.1 No thanks"
    assert proxy.send(spoofed())[0] == 554  # the sender keeps the message, and its file
    assert listed(proxy) == []
    sink.recorder.data_reply = None
    qid = held_id(relay(proxy, sink, spoofed()))  # the retry holds it
    assert [i["id"] for i in listed(proxy)] == [qid]


def test_the_same_message_sent_again_to_others_changes_nothing_held(make_proxy, sink):
    """The id follows the Message-ID and the file, which the sender chooses: sending it again,
    to other recipients, must not redirect a release nor clear the released state."""
    proxy = make_proxy(ON)
    qid = held_id(relay(proxy, sink, spoofed()))
    assert cli(proxy, "release", qid).returncode == 0
    code, _ = proxy.send(spoofed(to="sales@example.com"), rcpts=("sales@example.com",))
    assert code == 250 and held_id(sink.messages[-1].content) == qid  # the notice points to the copy kept
    (item,) = listed(proxy)
    assert item["recipients"] == ["support@example.com"] and item["released"] is True


def test_names_from_the_sender_do_not_reach_the_terminal_raw(make_proxy, sink):
    proxy = make_proxy(ON)
    hostile = "\x1b]0;owned\x07inv\u202eoice\u2028fdp.pdf"
    # RFC 2231, as a sender's mail program writes any name it likes.
    body = multipart(multipart(text(), text("<p>See attached.</p>", "html"), subtype="alternative"), entity([("Content-Type", "application/pdf"), ("Content-Transfer-Encoding", "base64"),
                                     ("Content-Disposition", f"attachment; filename*=UTF-8''{quote(hostile)}")],
                                    b64(EXE)))
    qid = held_id(relay(proxy, sink, message(body, subject="Invoice", message_id="<h@sender.test>")))
    (item,) = listed(proxy)
    assert item["id"] == qid
    for out in (cli(proxy, "list").stdout, cli(proxy, "list", "--json").stdout, cli(proxy, "show", qid).stdout):
        assert not [c for c in out if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") and c != "\n"], out


def routed_local(proxy_tmp) -> dict:
    return {"policy": {"quarantine": True, "quarantine_retention_days": 7},
            "server": {"accepted_domains": ["example.com", "other.test"]},
            "storage": {"tenant": "recipient-domain", "routes": {"other.test": "eu"}},
            "storage.stores.eu": {"backend": "local"},
            "storage.stores.eu.local": {"path": str(proxy_tmp / "eu-store")},
            "links": {"api_keys": [KEY]}}


def test_a_store_that_is_down_or_gone_hides_only_its_own_items(make_proxy, sink, tmp_path):
    proxy = make_proxy(routed_local(tmp_path))
    base = f"http://127.0.0.1:{proxy.links_port}"
    here = held_id(relay(proxy, sink, spoofed("<here@sender.test>")))
    old = held_id(relay(proxy, sink, spoofed("<old@sender.test>")))
    code, _ = proxy.send(spoofed("<eu@sender.test>", to="help@other.test"), rcpts=("help@other.test",))
    assert code == 250 and held_id(sink.messages[-1].content).startswith("eu-")
    # One unreadable record hides itself only.
    (proxy.store / ".records" / "quarantine" / "0123456789abcdef.json").write_text("{half a record")
    eu = tmp_path / "eu-store"
    eu.rename(tmp_path / "eu-store-unmounted")

    status, _, body = call(base, "GET", "/api/v1/quarantine")
    assert status == 200 and [i["id"] for i in body["items"]] == [here, old] and body["unavailable"] == ["eu"]
    assert {(e["event"], e.get("store") or e.get("id")) for e in proxy.events() if e["level"] == "warning"} >= {
        ("quarantine_list_store_unavailable", "eu"), ("quarantine_list_unreadable", "0123456789abcdef")}

    r = cli(proxy, "list")
    assert r.returncode == 0 and here in r.stdout and old in r.stdout
    assert "store eu could not be read" in r.stderr and "does not exist" in r.stderr and "Traceback" not in r.stderr
    assert [i["id"] for i in listed(proxy)] == [here, old]
    assert not eu.exists()  # not made again, empty, by the command line

    # Retention goes on in the stores that answer, and says what it could not do.
    _age(proxy, old, 8)
    r = cli(proxy, "purge")
    assert r.returncode == 1 and json.loads(r.stdout) == {"purged": [old], "unavailable": ["eu"],
                                                          "unreadable": ["0123456789abcdef"]}
    assert "store(s) eu" in r.stderr and [i["id"] for i in listed(proxy)] == [here]

    # Nothing answering is no empty list.
    proxy.store.rename(tmp_path / "store-unmounted")
    r = cli(proxy, "list")
    assert r.returncode == 1 and "unavailable" in r.stderr and "nothing is held" not in r.stdout
    assert not proxy.store.exists() and not eu.exists()


def test_the_command_line_closes_its_stores(make_proxy, sink, azurite):
    """Azure's async client complains on stderr about a session left open."""
    container = azurite.new_container()
    proxy = make_proxy({"policy": {"quarantine": True},
                        "storage": {"backend": "azure"},
                        "storage.azure": {"container": container, "connection_string": azurite.connection_string}})
    qid = held_id(relay(proxy, sink, spoofed()))
    for args in (("list",), ("show", qid), ("purge",)):
        r = cli(proxy, *args)
        assert r.returncode == 0 and (qid in r.stdout or args == ("purge",)), (args, r.stderr)
        assert "Unclosed" not in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
