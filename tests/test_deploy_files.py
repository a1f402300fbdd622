"""deploy/: the files an operator installs, accepted by the real tools and run where they can be.

- nginx: deploy/nginx/smtp-offload-tls.conf with test ports, a certificate from a throw-away
  CA and a private log, checked with `nginx -t` and run by the Debian nginx in front of a real
  proxy: a mailed link, the upload portal and the API over verified TLS, internal paths 404,
  and an access log without the credential in the path.
- Prometheus: the alert rules checked with `promtool check rules` and unit-tested with
  `promtool test rules` (deploy/prometheus/smtp-offload-rules.test.yml), the scrape example
  with `promtool check config`.
- Grafana: the dashboard's structure, and every metric name in it and in the alert rules is
  one a running proxy exposes.
(HAProxy's file is run by tests/test_haproxy.py.)
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml  # PyYAML (the test extra)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families

from tests.support import samples
from tests.support.api import KEY, call, upload
from tests.support.env import ROOT, missing
from tests.support.http import get
from tests.support.mail import attachment, message, multipart, text
from tests.support.net import free_port
from tests.support.nginx import Nginx
from tests.support.portal import new_session, path_of, request, tus_offset, tus_upload
from tests.support.relayed import body_text

DEPLOY = ROOT / "deploy"
TLS_SITE = DEPLOY / "nginx" / "smtp-offload-tls.conf"
RULES = DEPLOY / "prometheus" / "smtp-offload-rules.yml"
RULES_TEST = DEPLOY / "prometheus" / "smtp-offload-rules.test.yml"
SCRAPE = DEPLOY / "prometheus" / "scrape.yml"
DASHBOARD = DEPLOY / "grafana" / "smtp-offload-dashboard.json"


# -- nginx: TLS reverse proxy for the link service ------------------------------------------


def make_ca(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate it signed, for files.example.com and 127.0.0.1:
    (CA certificate, server chain, server key)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smtp-offload test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "files.example.com")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("files.example.com"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    paths = directory / "ca.pem", directory / "chain.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    paths[2].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths


def render_tls(site: str, *, https: int, http: int, links_port: int, chain: Path, key: Path, log: Path) -> str:
    """The shipped site with test ports, certificate and log; every replaced text must be there
    as often as expected, so the test fails rather than runs something else when the file changes."""
    for old, new, count in [("listen 443 ssl http2;", f"listen 127.0.0.1:{https} ssl http2;", 1),
                            ("listen 80;", f"listen 127.0.0.1:{http};", 1),
                            ("server 127.0.0.1:8025;", f"server 127.0.0.1:{links_port};", 1),
                            ("/etc/ssl/certs/files.example.com.pem;", f"{chain};", 1),
                            ("/etc/ssl/private/files.example.com.key;", f"{key};", 1),
                            ("/var/log/nginx/smtp-offload-tls.access.log", str(log), 2)]:
        assert site.count(old) == count, old
        site = site.replace(old, new)
    return site


@pytest.fixture
def tls_nginx(tmp_path, make_proxy, monkeypatch):
    """(proxy, https base URL, http base URL, access log): the proxy's links behind the shipped
    TLS site; every https client in the test verifies against the test CA (SSL_CERT_FILE)."""
    https, http = free_port(), free_port()
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    ca, chain, key = make_ca(prefix)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    base = f"https://127.0.0.1:{https}"
    proxy = make_proxy({"links": {"base_url": base, "api_keys": [KEY]}, "policy": {"offload_over_bytes": 10_000}})
    log = prefix / "tls-access.log"
    nginx = Nginx(prefix, render_tls(TLS_SITE.read_text(), https=https, http=http, links_port=proxy.links_port,
                                     chain=chain, key=key, log=log))
    checked = nginx.check()
    assert checked.returncode == 0 and "syntax is ok" in checked.stderr, checked.stderr
    nginx.start(https)
    yield proxy, base, f"http://127.0.0.1:{http}", log
    nginx.stop()


def test_links_portal_and_api_through_the_tls_site(tls_nginx, sink):
    proxy, base, plain, log = tls_nginx
    data = samples.big_pdf(60_000)
    assert proxy.send(message(multipart(text(), attachment(data, "contract.pdf", "application/pdf"))))[0] == 250
    (link,) = set(re.findall(rf"{re.escape(base)}/f/[A-Za-z0-9._~%-]+", body_text(sink.messages[-1].content)))
    token = link.rsplit("/f/", 1)[1]

    # The mailed link, over TLS verified against the CA: landing page and file; HSTS on both.
    status, headers, page = get(link)
    assert status == 200 and b"contract.pdf" in page
    assert headers["Strict-Transport-Security"] == "max-age=63072000"
    assert headers["Referrer-Policy"] == "no-referrer"  # the link service's own headers come through
    status, headers, body = get(link + "/download")
    assert status == 200 and body == data and "Strict-Transport-Security" in headers

    # Plain HTTP only redirects to HTTPS, the path kept.
    status, headers, _ = get(f"{plain}/f/{token}", follow=False)
    assert status == 301 and headers["Location"] == f"https://127.0.0.1/f/{token}"

    # The portal: a session made through the API, its page, its script, and a resumable upload
    # in two chunks, each above nginx's default 1 MiB body limit.
    session = new_session(base)
    assert session["uploadUrl"].startswith(base + "/u/")
    page = path_of(session["uploadUrl"])
    status, _, html = request(base, "GET", page)
    assert status == 200 and b"CASE-1042" in html
    status, _, js = request(base, "GET", "/portal/static/portal.js")
    assert status == 200 and b"function" in js
    pdf = samples.big_pdf(3 * 1024 * 1024)
    uploaded = tus_upload(base, page, "scan.pdf", pdf, chunk=len(pdf) // 2 + 1, filetype="application/pdf")
    assert tus_offset(base, uploaded) == len(pdf)

    # The API: a 2 MiB file, stored and linked through nginx.
    status, _, answer = upload(base, samples.big_pdf(2 * 1024 * 1024), "statement.pdf")
    assert status == 200 and answer["downloadUrl"].startswith(base + "/f/"), answer
    status, _, answer = call(base, "GET", "/api/v1/links/show?token=" + token)
    assert status == 200, answer

    # Nothing internal is public.
    for internal in ("/metrics", "/readyz", "/healthz", "/"):
        assert get(base + internal)[0] == 404, internal

    # The access log has every request, and no credential: no token in a path or a query.
    logged = log.read_text()
    assert "GET /f/- HTTP/" in logged and "GET /f/-/download HTTP/" in logged
    assert "POST /u/-/tus HTTP/" in logged and "GET /api/v1/links/show HTTP/" in logged
    assert token not in logged and page.rsplit("/", 1)[1] not in logged
    assert "token=" not in logged


# -- Prometheus: alert rules and scrape config -------------------------------------------------


def _promtool(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool")
    if exe is None:
        missing("promtool not installed (Debian package prometheus; scripts/system-deps installs it)")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, cwd=RULES.parent)


def test_alert_rules_pass_promtool_check_and_unit_tests():
    checked = _promtool("check", "rules", RULES.name)
    assert checked.returncode == 0 and "SUCCESS" in checked.stdout, checked.stdout + checked.stderr
    tested = _promtool("test", "rules", RULES_TEST.name)
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    config = _promtool("check", "config", SCRAPE.name)
    assert config.returncode == 0, config.stdout + config.stderr

    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    for rule in rules:  # each alert says how bad and what to do, and is unit-tested both ways
        assert rule["for"] and rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
        cases = [c for t in tests for c in t["alert_rule_test"] if c["alertname"] == rule["alert"]]
        fired = [a["exp_labels"].get("instance") for c in cases for a in c["exp_alerts"]]
        assert fired, f"{rule['alert']}: no case fires it"
        series = {s["series"] for t in tests if any(c in t["alert_rule_test"] for c in cases)
                  for s in t["input_series"]}
        quiet = {re.search(r'instance="([^"]+)"', s).group(1) for s in series} - set(fired)
        assert quiet, f"{rule['alert']}: no instance whose series must not fire it"


# -- Grafana dashboard, and the metric names of dashboard and rules --------------------------------

PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset",
                "bool", "inf", "nan"}
# Prometheus's own series, which no exporter serves.
PROMETHEUS_SERIES = {"up"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL (or Grafana query) expression selects: identifiers that are
    not functions, keywords, label names, durations, numbers or dashboard variables."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals: label values, regexes
    e = re.sub(r"\$\{?\w+\}?", "", e)  # $instance, ${DS_PROMETHEUS}, $__rate_interval
    e = re.sub(r"\{[^}]*\}", "", e)  # matchers: label names
    e = re.sub(r"\[[^\]]*\]", "", e)  # ranges and subqueries
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)  # label lists
    e = re.sub(r"\blabel_values\s*\(([^,()]+),[^)]*\)", r"(\1)", e)  # Grafana: label_values(metric, label)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        if e[m.end():].lstrip().startswith("(") or m.group().lower() in PROMQL_WORDS:
            continue  # a function (or a keyword before a parenthesis)
        if m.start() and (e[m.start() - 1].isdigit() or e[m.start() - 1] == "."):
            continue  # the tail of a number (1e3) or a duration (5m)
        names.add(m.group())
    return names


def matchers(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names matched) for every `name{...}` selector."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    return [(m.group(1), set(re.findall(r"(\w+)\s*[=!]~?", m.group(2))))
            for m in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}", e)]


def dashboard_queries(board: dict) -> list[str]:
    queries = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]
            queries.append(q["query"] if isinstance(q, dict) else q)
    return queries


def rule_queries() -> list[str]:
    return [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_metric_name_extraction():
    assert metric_names('histogram_quantile(0.95, sum by (le) (rate(a_bucket{x=~"y|z", instance=~"$instance"}'
                        '[$__rate_interval])))') == {"a_bucket"}
    assert metric_names('sum by (job, instance) (increase(b_total{r="4xx"}[10m] offset 5m)) > 3 * c / d') == \
        {"b_total", "c", "d"}
    assert metric_names("e / on(instance) group_left(version) f > bool 1e3") == {"e", "f"}
    assert metric_names("label_values(smtp_offload_build_info, instance)") == {"smtp_offload_build_info"}
    assert matchers('rate(a{x="}", y!~"z"}[5m]) + b{}') == [("a", {"x", "y"}), ("b", set())]


def test_dashboard_structure():
    board = json.loads(DASHBOARD.read_text())
    assert 36 <= board["schemaVersion"] <= 41 and board["uid"] and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource" and variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert variables["instance"]["type"] == "query" and variables["instance"]["includeAll"]
    assert [i["name"] for i in board["__inputs"]] == ["DS_PROMETHEUS"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    for p in board["panels"]:
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]) and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["title"] and p["description"] and p["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
        assert p["targets"], p["title"]
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"]), p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${DS_PROMETHEUS}" and t["expr"], p["title"]
            assert 'instance=~"$instance"' in t["expr"], (p["title"], t["expr"])  # the variable filters every query
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]


def test_dashboard_and_alerts_name_only_metrics_a_running_proxy_exposes(make_proxy, sink):
    admin = free_port()  # scraped where scrape.yml scrapes it: the admin listener
    proxy = make_proxy({"policy": {"offload_over_bytes": 10_000}, "links": {"api_keys": [KEY]},
                        "admin": {"listen": f"127.0.0.1:{admin}"}})
    data = samples.big_pdf(60_000)
    assert proxy.send(message(multipart(text(), attachment(data, "a.pdf", "application/pdf"))))[0] == 250
    assert len(sink.messages) == 1 and data not in sink.messages[0].content  # offloaded: histograms have samples
    # An API call, so the API's series (labelled by route and status) exist.
    assert call(f"http://127.0.0.1:{proxy.links_port}", "GET", "/api/v1/links/show?token=x")[0] == 400
    status, _, body = get(f"http://127.0.0.1:{admin}/metrics")
    assert status == 200
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            labels.setdefault(s.name, set()).update(s.labels)
    assert "smtp_offload_storage_put_seconds_bucket" in labels  # a histogram, as the test assumes

    queries = dashboard_queries(json.loads(DASHBOARD.read_text())) + rule_queries()
    used = set().union(*map(metric_names, queries))
    # The tokenizer misses nothing of ours: every smtp_offload_/process_ word is a name it found.
    assert set(re.findall(r"\b(?:smtp_offload|process)_\w+", " ".join(queries))) <= used
    unknown = used - set(labels) - PROMETHEUS_SERIES
    assert not unknown, sorted(unknown)
    # Every label a selector matches is one the series carry (job and instance come from the scrape).
    for name, matched in (m for q in queries for m in matchers(q)):
        if name not in PROMETHEUS_SERIES:
            strange = matched - labels[name] - {"job", "instance"}
            assert not strange, (name, strange)
    # Every family of ours is on the dashboard: a new metric fails here until it has a panel.
    on_dashboard = set().union(*map(metric_names, dashboard_queries(json.loads(DASHBOARD.read_text()))))
    families = {f.name for f in text_string_to_metric_families(body.decode()) if f.name.startswith("smtp_offload_")}
    missing_panels = {f for f in families if not any(n == f or n.startswith(f + "_") for n in on_dashboard)}
    assert not missing_panels, sorted(missing_panels)
