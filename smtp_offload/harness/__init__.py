"""`smtp-offload send-samples`: realistic messages built in code, sent to a running proxy.

For each message it prints the SMTP reply and, when the proxy relays to the harness's own
recording sink (`--sink HOST:PORT`), what the proxy decided per attachment, read back
from the X-Smtp-Offload-Attachment headers of the relayed message.
"""

from __future__ import annotations

import re
import smtplib
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from ..units import human_size
from . import files
from .mime import attachment, b64, entity, message, multipart, rfc822, text

MiB = 1024 * 1024


@dataclass(frozen=True)
class Sample:
    title: str
    data: bytes
    expect: str  # what a default config should do, in words


def samples(scale: float = 1.0, to: str = "support@example.com") -> list[Sample]:
    """The sample set; `scale` shrinks the big files (tests use a small scale)."""
    def size(n: int) -> int:
        return max(2000, int(n * scale))

    def msg(subject: str, body: bytes) -> bytes:
        return message(body, subject=subject, to=to)

    html = entity([("Content-Type", "text/html; charset=utf-8")],
                  b'<html><body><p>Hello, see our logo: <img src="cid:logo@x"></p></body></html>')
    logo = entity([("Content-Type", "image/png"), ("Content-Transfer-Encoding", "base64"),
                   ("Content-ID", "<logo@x>"), ("Content-Disposition", 'inline; filename="logo.png"')],
                  b64(files.png()))
    forwarded = message(multipart(text("Original message with its own attachment.\r\n"),
                                  attachment(files.pdf(), "original-contract.pdf", "application/pdf")),
                        subject="Fwd source")
    planner = multipart(text("Six scans, none above the threshold, too big together.\r\n"),
                        *(attachment(files.big_pdf(size(8 * MiB)), f"scan-{i}.pdf", "application/pdf")
                          for i in range(1, 7)))
    return [
        Sample("plain text", msg("Plain text", text("Just text, nothing attached.\r\n")), "relayed unchanged"),
        Sample("HTML with an inline image", msg("HTML newsletter", multipart(html, logo, subtype="related")),
               "image kept"),
        Sample("small PDF", msg("Invoice", multipart(text(), attachment(files.pdf(), "invoice-123.pdf",
                                                                        "application/pdf"))), "kept"),
        Sample("30 MiB PDF", msg("Scanned contract", multipart(text(), attachment(
            files.big_pdf(size(30 * MiB)), "contract-scan.pdf", "application/pdf"))), "offloaded, link in body"),
        Sample("12 MiB JPEG", msg("Photo of damage", multipart(text(), attachment(
            files.big_jpeg(size(12 * MiB)), "damage.jpg", "image/jpeg"))), "offloaded, link in body"),
        Sample("executable named invoice.pdf", msg("Your invoice", multipart(text(), attachment(
            files.pe_exe(), "invoice.pdf", "application/pdf"))), "stripped (blocked)"),
        Sample("zero-byte file", msg("Empty file", multipart(text(), attachment(b"", "empty.pdf",
                                                                                "application/pdf"))),
               "stripped (empty)"),
        Sample("DOCX", msg("Letter", multipart(text(), attachment(
            files.docx(), "letter.docx",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document"))), "kept"),
        Sample("forwarded message", msg("Fwd: contract", multipart(text("See below.\r\n"), rfc822(forwarded))),
               "inner attachment judged, kept"),
        Sample("Japanese file name", msg("請求書", multipart(text(), attachment(files.pdf(), "請求書.pdf",
                                                                            "application/pdf"))), "kept"),
        Sample("over the downstream limit", msg("Many scans", planner),
               "planner offloads the largest until it fits"),
    ]


_DECISION = re.compile(r"^X-Smtp-Offload-Attachment:(.*?)(?=^\S)", re.MULTILINE | re.DOTALL)


def decisions(relayed: bytes) -> list[dict[str, str]]:
    """The proxy's per-attachment decisions, from its headers."""
    head = relayed.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace") + "\r\nEnd:"
    out = []
    for m in _DECISION.finditer(head):
        fields = {}
        for item in re.split(r";\s*", " ".join(m.group(1).split())):
            key, _, value = item.partition("=")
            if key:
                fields[key.strip()] = value.strip().strip('"')
        if "name*" in fields:
            fields["name"] = urllib.parse.unquote(fields.pop("name*").split("''", 1)[-1])
        out.append(fields)
    return out


def file_name(n: int, title: str) -> str:
    """`--save`'s name for sample `n`: "04-30-mib-pdf.eml" (ASCII, whatever the title)."""
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "sample"
    return f"{n:02d}-{slug}.eml"


def send_samples(server: str, to: str, sender: str, sink=None, scale: float = 1.0,
                 out=sys.stdout, save: Path | None = None) -> list[dict]:
    """Send every sample; with a sink, read back what the proxy relayed (and with `save`, write
    it to that directory, one .eml per sample). One result row per sample."""
    host, _, port = server.rpartition(":")
    results = []
    items = samples(scale, to)
    for n, s in enumerate(items, 1):
        print(f"[{n}/{len(items)}] {s.title} ({human_size(len(s.data))}) ...", end=" ", flush=True, file=out)
        started = time.monotonic()
        try:
            with smtplib.SMTP(host, int(port), timeout=300) as c:
                c.ehlo("send-samples.smtp-offload")
                c.sendmail(sender, [to], s.data)
                code, reply = 250, "accepted"
        except smtplib.SMTPResponseException as exc:
            code, reply = exc.smtp_code, exc.smtp_error.decode("utf-8", "replace")
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = next(iter(exc.recipients.values()))
            reply = reply.decode("utf-8", "replace")
        except (OSError, smtplib.SMTPException) as exc:
            code, reply = 0, f"connection failed: {exc}"
        row = {"sample": s.title, "size": len(s.data), "code": code, "reply": reply, "expected": s.expect,
               "seconds": round(time.monotonic() - started, 2)}
        if sink is not None and code == 250:
            relayed = sink.wait_for(n_accepted(results) + 1, timeout=30)
            row["decisions"] = decisions(relayed) if relayed else []
            row["size_relayed"] = len(relayed) if relayed else None
            if relayed and save is not None:
                path = save / file_name(n, s.title)
                try:
                    path.write_bytes(relayed)
                    row["saved"] = str(path)
                except OSError as exc:  # a full disk loses the copy, not the run
                    print(f"cannot save {path}: {exc.strerror}", file=out)
        results.append(row)
        print(f"{code} {reply}", file=out)
        for d in row.get("decisions", []):
            extra = f" until {time.strftime('%Y-%m-%d', time.gmtime(int(d['expires'])))}" if "expires" in d else ""
            print(f"      {d.get('verdict', '?'):8} {d.get('name', '?')} ({d.get('detected', '?')}, "
                  f"{human_size(int(d.get('size', 0)))}){extra} {d.get('reason', '')}", file=out)
    if save is not None:
        saved = sum(1 for r in results if "saved" in r)
        print(f"saved {saved} relayed message(s) as .eml files in {save}", file=out)
    return results


def n_accepted(rows: list[dict]) -> int:
    return sum(1 for r in rows if r["code"] == 250)
