"""Arrangement A of deploy/postfix/README.md, end to end: a private Postfix instance
(tests/support/postfix.py) configured from deploy/postfix/content-filter/ receives mail on its public
smtpd, hands it to the proxy through the `smtp-offload` content-filter transport, the proxy
relays the rewritten message to Postfix's re-injection smtpd, and Postfix delivers it (once,
not back into the filter) to the recording sink.

The snippets are used as shipped; only the ports are the test's (10025 -> the proxy, 10026 ->
the re-injection smtpd, the public `smtp inet` service -> a free loopback port) and the
chroot column is "n" (the test instance has no chroot tree). The proxy's config is
deploy/postfix/content-filter/smtp-offload.toml less its host paths and ports.
"""

from __future__ import annotations

import collections
import hashlib
import re
import smtplib
import tomllib

import pytest

from tests.support import samples
from tests.support.env import ROOT, missing
from tests.support.http import get
from tests.support.net import free_port, wait_port
from tests.support.postfix import (
    MASTER_CF, Postfix, Sent, arrivals, compose as _compose, deliver_all, postfix_unavailable, received,
)
from tests.support.relayed import LINK, attachment_payloads, body_text

_unavailable = postfix_unavailable()


@pytest.fixture(scope="module", autouse=True)
def _postfix_available() -> None:  # first of the module's fixtures: before any Postfix is started
    if _unavailable is not None:
        missing(_unavailable)

SNIPPETS = ROOT / "deploy" / "postfix" / "content-filter"
RELAY_SNIPPETS = ROOT / "deploy" / "postfix" / "relay"
THRESHOLD = 50_000  # policy.offload_over_bytes for the test: the big file below is offloaded


# --- Postfix configured from the snippets -------------------------------------------------

def master_entries(text: str) -> list[str]:
    """master.cf services: a line starting in column 1 plus its indented continuation lines."""
    entries: list[str] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace():
            entries[-1] += "\n" + line
        else:
            entries.append(line)
    return entries


def main_settings(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


class FilterPostfix(Postfix):
    """The tests' private Postfix in the content-filter arrangement. Its relayhost is the sink:
    that is where the re-injected mail goes (the filter is only on the public smtpd)."""

    def __init__(self, sink_port: int, filter_port: int, reinject_port: int):
        self.filter_port, self.reinject_port = filter_port, reinject_port
        super().__init__(relay_port=sink_port)
        base = MASTER_CF.format(smtp_port=self.smtp_port).splitlines()
        assert base[0].startswith(f"127.0.0.1:{self.smtp_port} inet")  # replaced by the snippet's smtpd
        services = [self.localize(e) for e in master_entries((SNIPPETS / "master.cf").read_text())]
        (self.conf / "master.cf").write_text("\n".join(base[1:] + services) + "\n")

    def localize(self, entry: str) -> str:
        first, _, rest = entry.partition("\n")
        fields = first.split()
        if fields[:2] == ["smtp", "inet"]:
            fields[0] = f"127.0.0.1:{self.smtp_port}"
        fields[4] = "n"  # no chroot
        entry = "  ".join(fields) + ("\n" + rest if rest else "")
        entry = entry.replace("[127.0.0.1]:10025", f"[127.0.0.1]:{self.filter_port}")
        return entry.replace("127.0.0.1:10026 ", f"127.0.0.1:{self.reinject_port} ")

    def main_cf(self) -> str:
        settings = main_settings(super().main_cf())
        settings.update(main_settings((SNIPPETS / "main.cf").read_text()))
        return "".join(f"{k} = {v}\n" for k, v in settings.items())

    def start(self) -> "FilterPostfix":
        super().start()
        wait_port(self.reinject_port, timeout=30)
        return self

    def submit_to(self, message: bytes, rcpts: list[str], sender: str = "customer@sender.test") -> None:
        """Send one message into the public smtpd (the port 25 of production)."""
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30) as c:
            c.ehlo("client.sender.test")
            refused = c.sendmail(sender, rcpts, message)
            assert not refused, refused

    def services(self) -> str:
        return self.run("-M", command="postconf").stdout


class RelayPostfix(Postfix):
    """Arrangement B from deploy/postfix/relay/: Postfix is the MX for contact.example.com and
    routes it through transport_maps to the proxy, which relays to the platform (the sink)."""

    def __init__(self, proxy_port: int, unused_port: int):
        self.proxy_port = proxy_port
        super().__init__(relay_port=unused_port)  # the base relayhost: must see no mail
        services = [e.replace("[127.0.0.1]:10025", f"[127.0.0.1]:{proxy_port}")
                    for e in master_entries((RELAY_SNIPPETS / "master.cf").read_text())]
        with open(self.conf / "master.cf", "a") as fh:
            fh.write("\n".join(services) + "\n")
        transport = (RELAY_SNIPPETS / "transport").read_text().replace("[127.0.0.1]:10025",
                                                                          f"[127.0.0.1]:{proxy_port}")
        (self.conf / "transport").write_text(transport)

    def main_cf(self) -> str:
        settings = main_settings(super().main_cf())
        snippet = main_settings((RELAY_SNIPPETS / "main.cf").read_text())
        snippet["transport_maps"] = snippet["transport_maps"].replace("/etc/postfix", str(self.conf))
        settings.update(snippet)
        return "".join(f"{k} = {v}\n" for k, v in settings.items())

    def start(self) -> "RelayPostfix":
        self.run(str(self.conf / "transport"), command="postmap")
        return super().start()

    submit_to = FilterPostfix.submit_to


def proxy_overrides(snippets=SNIPPETS, keep_domains: bool = False) -> dict[str, dict]:
    """A shipped proxy config as overrides for tests/support/proc.py's Proxy, less what is about this
    machine (ports, paths; the domains unless `keep_domains`), which the test sets."""
    cfg = tomllib.loads((snippets / "smtp-offload.toml").read_text())
    sections: dict[str, dict] = {}

    def flatten(prefix: str, table: dict) -> None:
        for k, v in table.items():
            if isinstance(v, dict):
                flatten(f"{prefix}.{k}" if prefix else k, v)
            else:
                sections.setdefault(prefix, {})[k] = v

    flatten("", cfg)
    for section, key in [("server", "listen"), ("downstream", "host"), ("downstream", "port"),
                         ("storage.local", "path")] + ([] if keep_domains else [("server", "accepted_domains")]):
        sections[section].pop(key)
    sections.pop("links")
    sections["policy"]["offload_over_bytes"] = THRESHOLD
    return sections


@pytest.fixture
def chain(make_proxy, sink):
    """(Postfix, proxy): Postfix's public smtpd -> content filter -> proxy -> re-injection -> sink."""
    reinject_port = free_port()
    overrides = proxy_overrides()
    assert overrides["downstream"]["tls"] == "none"  # the re-injection smtpd offers no STARTTLS
    proxy = make_proxy(overrides, downstream_port=reinject_port)
    pf = FilterPostfix(sink.port, proxy.smtp_port, reinject_port)
    try:
        pf.start()
        yield pf, proxy
    finally:
        pf.stop()


# --- messages and waiting ------------------------------------------------------------------

_QUEUED = re.compile(r": (?P<qid>[0-9A-F]{6,}): message-id=(?P<mid><[^>]*>)$")
_DELIVERY = re.compile(r": (?P<qid>[0-9A-F]{6,}): to=<(?P<rcpt>[^>]*)>, relay=(?P<relay>[^,]+), "
                       r".*?status=(?P<status>\w+) \((?P<text>.*)\)$")


def compose(tag: str, big: dict[str, bytes] | None = None, small: dict[str, bytes] | None = None) -> Sent:
    return _compose(tag, big, small, subject="Content filter test")


def hops(pf: Postfix, s: Sent) -> list[tuple[str, set[tuple[str, str, str]]]]:
    """Each time Postfix queued this message: (queue id, {(recipient, relay, status)})."""
    log = pf.log().splitlines()
    qids = [m["qid"] for m in map(_QUEUED.search, log) if m and m["mid"] == s.message_id]
    deliveries = collections.defaultdict(set)
    for m in map(_DELIVERY.search, log):
        if m:
            deliveries[m["qid"]].add((m["rcpt"], m["relay"], m["status"]))
    return [(q, deliveries[q]) for q in qids]


def assert_filtered_once(pf: Postfix, proxy, sink, s: Sent, rcpts: list[str]) -> None:
    """Exactly one copy at the sink, and Postfix's log shows the path: queued once from the
    public smtpd and delivered to the proxy, queued once more from the re-injection smtpd and
    delivered to the sink; never a second trip through the filter."""
    assert arrivals(sink)[s.message_id] == 1
    (first_qid, first), (second_qid, second) = hops(pf, s)
    to_proxy = f"127.0.0.1[127.0.0.1]:{proxy.smtp_port}"
    to_sink = f"127.0.0.1[127.0.0.1]:{pf.relay_port}"
    assert first == {(r, to_proxy, "sent") for r in rcpts}, pf.log_tail()
    assert second == {(r, to_sink, "sent") for r in rcpts}, pf.log_tail()
    (event,) = [e for e in proxy.events("message") if e.get("message_id") == s.message_id]
    assert event["outcome"] == "relayed"
    got = received(sink, s)
    assert sorted(got.rcpt_tos) == sorted(rcpts) and got.mail_from == "customer@sender.test"


def header_block(content: bytes) -> bytes:
    return content.split(b"\r\n\r\n", 1)[0]


# --- the tests ------------------------------------------------------------------------------

def test_postfix_config_is_what_the_snippets_say(chain):
    pf, proxy = chain
    services = pf.services()
    assert f"content_filter=smtp-offload:[127.0.0.1]:{proxy.smtp_port}" in services
    assert "smtp-offload unix" in services and "smtp_data_done_timeout=1200s" in services
    assert f"127.0.0.1:{pf.reinject_port} inet" in services and "content_filter= " in services
    check = pf.run("check", check=False)
    assert check.returncode == 0 and "warning" not in check.stderr, check.stderr
    params = pf.run("-n", command="postconf").stdout
    assert "smtp-offload_destination_recipient_limit = 50" in params


def test_oversized_attachment_offloaded_through_the_content_filter(chain, sink):
    pf, proxy = chain
    big = samples.big_pdf(300_000)
    s = compose("filter-big", big={"contract.pdf": big}, small={"logo.png": samples.png()})
    rcpts = ["support@example.com", "sales@example.com"]
    pf.submit_to(s.raw, rcpts)
    deliver_all(pf, sink, [s])

    assert_filtered_once(pf, proxy, sink, s, rcpts)
    got = received(sink, s).content
    head = header_block(got)
    # Rewritten: the big file left, the small one stayed byte for byte.
    assert attachment_payloads(got) == s.small
    assert re.search(rb"^X-Smtp-Offload: v=1; id=\S+; action=rewritten; kept=1; offloaded=1; stripped=0", head, re.M)
    assert re.search(rb"^X-Smtp-Offload-Attachment: v=1; n=\d+; part=\S+; verdict=offload;", head, re.M)
    assert hashlib.sha256(big).hexdigest().encode() in head
    # The notice names the file and links it; the link downloads exactly its bytes.
    notice = body_text(got)
    assert "contract.pdf" in notice
    (link,) = {u.decode() for u in LINK.findall(notice.encode())}
    status, headers, body = get(link.rstrip("/") + "/download")
    assert status == 200 and body == big, (status, headers)
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(big).hexdigest()


def test_plain_message_passes_unchanged_apart_from_headers(chain, sink):
    pf, proxy = chain
    s = compose("filter-plain")
    pf.submit_to(s.raw, ["support@example.com"])
    deliver_all(pf, sink, [s])

    assert_filtered_once(pf, proxy, sink, s, ["support@example.com"])
    got = received(sink, s).content
    assert got.endswith(s.raw)  # the original message, byte for byte, below the trace headers
    added = got[: -len(s.raw)]
    assert re.search(rb"^X-Smtp-Offload: v=1; id=\S+; action=unchanged; kept=0; offloaded=0; stripped=0",
                     added, re.M)
    assert b"X-Smtp-Offload-Attachment" not in added
    # Three hops prepended their Received lines: Postfix's public smtpd, the proxy, the re-injection.
    assert len(re.findall(rb"^Received: ", added, re.M)) == 3
    assert b"(smtp-offload)" in added


def test_many_messages_each_exactly_once(chain, sink):
    """A small burst through both hops: nothing lost, nothing doubled."""
    pf, proxy = chain
    sent = [compose(f"burst-{i}", big={"scan.pdf": samples.big_pdf(60_000 + i * 1000)}) if i % 2
            else compose(f"burst-{i}") for i in range(8)]
    for s in sent:
        pf.submit_to(s.raw, ["support@example.com"])
    deliver_all(pf, sink, sent, timeout=90)
    assert arrivals(sink) == collections.Counter({s.message_id: 1 for s in sent})
    for s in sent:
        got = received(sink, s).content
        if s.big:
            assert attachment_payloads(got) == {} and LINK.search(got)
        else:
            assert got.endswith(s.raw)


# --- arrangement B ---------------------------------------------------------------------------

def test_relay_arrangement_routes_the_domain_through_the_proxy_to_the_platform(make_proxy, sink):
    overrides = proxy_overrides(RELAY_SNIPPETS, keep_domains=True)
    assert overrides["server"]["accepted_domains"] == ["contact.example.com"]
    proxy = make_proxy(overrides)  # downstream: the sink, standing in for the platform
    pf = RelayPostfix(proxy.smtp_port, free_port())
    try:
        pf.start()
        big = samples.big_pdf(200_000)
        s = compose("relay-big", big={"contract.pdf": big})
        rcpts = ["support@contact.example.com"]
        pf.submit_to(s.raw, rcpts)
        deliver_all(pf, sink, [s])

        assert arrivals(sink)[s.message_id] == 1
        ((qid, delivered),) = hops(pf, s)  # queued once, delivered to the proxy by the transport
        assert delivered == {(rcpts[0], f"127.0.0.1[127.0.0.1]:{proxy.smtp_port}", "sent")}, pf.log_tail()
        got = received(sink, s)
        assert got.rcpt_tos == rcpts
        assert attachment_payloads(got.content) == {}
        (link,) = {u.decode() for u in LINK.findall(body_text(got.content).encode())}
        status, _, body = get(link.rstrip("/") + "/download")
        assert status == 200 and body == big
    finally:
        pf.stop()
