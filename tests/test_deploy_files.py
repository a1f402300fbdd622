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
import yaml
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
from tests.support.portal import new_session, path_of, request, tus_offset, tus_upload
from tests.support.relayed import body_text
from tests.test_nginx_sso import Nginx

DEPLOY = ROOT / "deploy"
TLS_SITE = DEPLOY / "nginx" / "smtp-offload-tls.conf"
RULES = DEPLOY / "prometheus" / "smtp-offload-rules.yml"
RULES_TEST = DEPLOY / "prometheus" / "smtp-offload-rules.test.yml"
SCRAPE = DEPLOY / "prometheus" / "scrape.yml"
DASHBOARD = DEPLOY / "grafana" / "smtp-offload-dashboard.json"


# -- nginx: TLS reverse proxy for the link service ------------------------------------------


def test_ca(directory: Path) -> tuple[Path, Path, Path]:
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


test_ca.__test__ = False  # a helper, not a test


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
    ca, chain, key = test_ca(prefix)
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
