"""The notice an agent reads (smtp_offload/notices): plain reasons and next steps from the rule
codes inspect/rules.py gives, in English and German, from templates an administrator can
override file by file; names escaped in HTML and neutralised in text; the link as the file name
(HTML) and alone on its line (text); within the size budget decide.py reserves; and a German
notice through the real proxy."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from smtp_offload.config import NOTICE_TEMPLATES, NoticesConfig
from smtp_offload.delivery import decide as decide_module
from smtp_offload.delivery.decide import NOTICE_BUDGET, NOTICE_PER_FILE
from smtp_offload.inspect import InspectPolicy, judge, names, rules
from smtp_offload.inspect.policy import KeepOrBlock
from smtp_offload.inspect.rules import RULES
from smtp_offload.mime import codec
from smtp_offload.model import File, FileOutcome, Part, Verdict
from smtp_offload.notices import NoticeError, Notices
from smtp_offload.notices.items import FACT_MAX, NAME_MAX, Item
from smtp_offload.notices.sample import FACTS, LONG_LINK
from tests.support import samples
from tests.support.mail import attachment, message, multipart, text
from tests.support.proc import refused_start
from tests.support.relayed import EXE, LINK, attachment_payloads, body_text, said

LANGUAGES = sorted(p.name for p in NOTICE_TEMPLATES.iterdir() if p.is_dir())
LINK_URL = "https://files.example.com/f/7Hq2xKpL9mWv3RtY8sNc"


def outcome(data: bytes, name: str, declared: str, policy: InspectPolicy = InspectPolicy(),
            **changes) -> FileOutcome:
    """What prepare() hands the notice for one attachment: judged by the real rules."""
    j = judge(data, declared, name, policy)
    part = Part(path="2", start=0, end=len(data), header_end=0, body_start=0, body_end=len(data),
                content_type=declared, params={}, disposition="attachment", filename=name, cte="base64")
    f = File(part=part, data=data, sha256=hashlib.sha256(data).hexdigest(), judgement=j, wire_size=len(data))
    o = FileOutcome(f, j.verdict, j.reason)
    return dataclasses.replace(o, **changes)


def flat(text: str) -> str:
    return " ".join(text.split())


# --- every rule has its words ---------------------------------------------------------------

def _constants(tree: ast.AST, call: str, position: int, keyword: str | None = None) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == call:
            args = node.args[position:position + 1] + [k.value for k in node.keywords if k.arg == keyword]
            found |= {a.value for a in args if isinstance(a, ast.Constant) and isinstance(a.value, str)}
    return found


def produced_codes() -> set[str]:
    """Every rule code the judging code can put into a Judgement, read from its source."""
    tree = ast.parse(Path(rules.__file__).read_text())
    codes = _constants(tree, "verdict", 2)
    for node in ast.walk(tree):  # _archive_refusal's (reason, rule, facts)
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple) and len(node.value.elts) == 3 \
                and isinstance(node.value.elts[1], ast.Constant):
            codes.add(node.value.elts[1].value)
    # verdict() builds the one Judgement in rules.py: one built elsewhere would escape this enumeration
    assert sum(isinstance(n, ast.Call) and getattr(n.func, "id", None) == "Judgement" for n in ast.walk(tree)) == 1
    codes |= set(rules._ARCHIVE_RULES.values())
    problems = _constants(ast.parse(Path(names.__file__).read_text()), "NameProblem", 2)
    codes |= {p if p == "double_extension" else f"name_{p}" for p in problems}
    codes |= _constants(ast.parse(Path(decide_module.__file__).read_text()), "Judgement", 4, "rule")
    return codes


def test_the_rule_codes_are_exactly_those_the_rules_produce():
    assert produced_codes() == set(RULES)
    # Every removal in rules.py names its rule (a verdict call without one would show the bare reason).
    tree = ast.parse(Path(rules.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "verdict":
            v = node.args[0]
            assert isinstance(v, ast.Attribute) and (v.attr == "KEEP" or len(node.args) >= 3), ast.dump(node)


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_rule_code_has_its_own_sentence_and_next_step(language):
    assert {"en", "de"} <= set(LANGUAGES)
    n = Notices(NoticesConfig(language=language))
    whys = {}
    for rule, facts in [*RULES.items(), ("tnef", ())]:
        item = Item(name="x.pdf", size="1.0 KiB", type="application/pdf", state="removed", verdict="blocked",
                    rule=rule, facts={k: FACTS[k] for k in facts}, reason="UNTRANSLATED-REASON")
        plain, html = n.render_items([item])
        assert "UNTRANSLATED-REASON" not in plain + html, rule  # not the English fallback
        whys[rule] = flat(plain).split("x.pdf", 1)[1]
    assert len(set(whys.values())) == len(whys)  # no two rules read the same


# --- what the agent reads ---------------------------------------------------------------------

def test_a_disguised_program_is_named_in_plain_words_with_the_next_step():
    o = outcome(EXE, "invoice.pdf", "application/pdf")
    assert (o.file.judgement.reason, o.file.judgement.rule) == ("Windows executable disguised as PDF", "disguised")
    plain, html = Notices(upload_links=True).render([o])
    assert '* "invoice.pdf" (1.0 KiB) was removed.' in plain
    assert ("It is a Windows program disguised as a PDF document. Ask the customer for the original PDF "
            "document, or send them an upload link.") in flat(plain)
    assert "<strong>invoice.pdf</strong> (<span style=\"white-space:nowrap\">1.0 KiB</span>) was removed. It is a " \
           "Windows program disguised as a PDF document.<br>Ask the customer for the original PDF document, or " \
           "send them an upload link." in html
    assert "application/" not in plain + html and "executable" not in plain  # no MIME jargon
    de_plain, de_html = Notices(NoticesConfig(language="de")).render([o])
    assert "Die Datei ist ein Windows-Programm, getarnt als PDF-Dokument. Bitten Sie den Kunden um das " \
           "Original (PDF-Dokument)." in flat(de_plain)
    assert "Upload-Link" not in de_plain  # the portal is off: no promise of one


@pytest.mark.parametrize("data, name, declared, en, de", [
    (b"", "scan.pdf", "application/pdf", "It is an empty file (0 bytes). Ask the customer to attach the file again.",
     "„scan.pdf“ (0 Bytes) wurde entfernt. Die Datei ist leer (0 Bytes). Bitten Sie den Kunden, die Datei "
     "noch einmal anzuhängen."),
    (EXE, "setup.exe", "application/octet-stream", "It is a program file (.exe); programs are not accepted.",
     "Die Datei ist ein Programm (.exe); Programme werden nicht angenommen."),
    (samples.docm(), "claim.docm", "application/vnd.ms-word.document.macroenabled.12",
     "It is an Office document with macros, which are not accepted. Ask the customer to save it without macros",
     "Die Datei ist ein Office-Dokument mit Makros, die nicht angenommen werden."),
    (samples.raw_zip([{"name": "photos/setup.exe", "data": EXE}]), "photos.zip", "application/zip",
     'It is a ZIP archive that contains a Windows program ("setup.exe"). Ask the customer to send only the '
     "documents, without the program.",
     "Die Datei ist ein ZIP-Archiv mit gefährlichem Inhalt: Windows-Programm „setup.exe“."),
])
def test_rules_read_as_plain_sentences_in_both_languages(data, name, declared, en, de):
    o = outcome(data, name, declared, InspectPolicy(on_macros=KeepOrBlock.BLOCK))
    assert o.verdict is not Verdict.KEEP and o.file.judgement.rule
    assert en in flat(Notices().render([o])[0])
    assert de in flat(Notices(NoticesConfig(language="de")).render([o])[0])


def test_the_offloaded_file_is_the_link_text_and_the_url_stands_alone_on_its_line():
    o = outcome(samples.big_pdf(300_000), "Claim 2024-117 – photos of the water damage.pdf", "application/pdf",
                verdict=Verdict.OFFLOAD, link=LINK_URL, link_expires=1_796_000_000)
    for language in LANGUAGES:
        plain, html = Notices(NoticesConfig(language=language)).render([o])
        lines = plain.split("\r\n")
        assert LINK_URL in lines and plain.count(LINK_URL) == 1  # the whole line, nothing else on it
        assert all(len(line) <= 76 for line in lines if o.name not in line and line != LINK_URL), plain
        assert f'<a href="{LINK_URL}" style="color:#1f5fbf;font-weight:bold">{o.name}</a>' in html
        assert html.count(LINK_URL) == 1  # the href only: the link text is the name
    assert "Download it until 2026-11-30 " in flat(Notices().render([o])[0])


def test_an_attacker_chosen_name_is_escaped_in_html_and_neutralised_in_text():
    name = '"><script>alert(1)"\r\nX-Injected: yes\u202egnp.pdf'
    o = outcome(EXE, name, "application/pdf", quarantine_id="eu-0123456789abcdef")
    plain, html = Notices().render([o])
    assert "<script" not in html and "X-Injected: yes<" not in html
    assert "<strong>&#34;&gt;&lt;script&gt;alert(1)&#34; X-Injected: yesgnp.pdf</strong>" in html
    # text: taken literally (no entities), on the bullet's own line, no line break or bidi control from the name
    (line,) = [line for line in plain.split("\r\n") if "alert(1)" in line]
    assert line == '* ""><script>alert(1)" X-Injected: yesgnp.pdf" (1.0 KiB) was removed.'
    assert "\u202e" not in plain + html and not any(line.startswith("X-Injected") for line in plain.split("\r\n"))


# --- an administrator's templates ---------------------------------------------------------------

def test_an_override_wins_for_its_one_file_and_the_shipped_ones_stay(tmp_path):
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "notice.txt").write_text(
        "{% import 'words.txt' as words %}Example Insurance mail desk\n"
        "{% for f in files %}{{ f.name }}: {{ words.why(f) }}\n{% endfor %}")
    (tmp_path / "fr").mkdir()  # a language of the admin's own, with one file so far
    (tmp_path / "fr" / "notice.html").write_text("<p>Message modifié : {{ files|length }} fichier(s)</p>")
    o = outcome(EXE, "invoice.pdf", "application/pdf")
    plain, html = Notices(NoticesConfig(templates_dir=str(tmp_path))).render([o])
    assert plain.startswith("Example Insurance mail desk\r\ninvoice.pdf: It is a Windows program disguised")
    assert "The mail gateway changed this message" in html and "<strong>invoice.pdf</strong>" in html  # shipped
    fr_plain, fr_html = Notices(NoticesConfig(language="fr", templates_dir=str(tmp_path))).render([o])
    assert fr_html.startswith("<p>Message modifié : 1 fichier(s)</p>")
    assert fr_plain.startswith("The mail gateway changed this message")  # not translated yet: English


def test_a_template_that_fails_only_on_some_mail_falls_back_to_the_shipped_notice(tmp_path):
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "notice.txt").write_text("{% for f in files %}{{ 1 // (f.name != 'boom.pdf') }}{% endfor %}")
    n = Notices(NoticesConfig(templates_dir=str(tmp_path)))
    n.check()  # the sample's names do not trip it
    plain, _ = n.render([outcome(EXE, "boom.pdf", "application/pdf")])
    assert plain.startswith("The mail gateway changed this message") and '"boom.pdf"' in plain


@pytest.mark.parametrize("template, error", [
    ("{% for f in files %}{{ f.name }\n{% endfor %}", "line 1: unexpected '}'"),
    ("{{ files[0].name.upper() }}{{ files|nosuchfilter }}", "No filter named 'nosuchfilter'"),
    ("{% for f in files %}{{ f.facts.claimed.nope() }}{% endfor %}", "UndefinedError"),
])
def test_a_broken_override_is_named_with_its_file_and_setting(tmp_path, template, error):
    (tmp_path / "de").mkdir()
    (tmp_path / "de" / "notice.txt").write_text(template)
    with pytest.raises(NoticeError) as exc:
        Notices(NoticesConfig(language="de", templates_dir=str(tmp_path))).check()
    message = str(exc.value)
    assert str(tmp_path / "de" / "notice.txt") in message
    assert error in message and f"notices.templates_dir = '{tmp_path}'" in message


def test_a_broken_override_refuses_the_start(tmp_path, sink):
    broken = tmp_path / "templates"
    (broken / "en").mkdir(parents=True)
    (broken / "en" / "notice.html").write_text("<p>{% if files %}changed</p>\n")  # no endif
    out = refused_start(tmp_path, sink.port, {"notices": {"templates_dir": str(broken)}})
    assert str(broken / "en" / "notice.html") in out and "notices.templates_dir" in out
    assert "Unexpected end of template" in out
    checked = subprocess.run([sys.executable, "-m", "smtp_offload", "check-config", "--offline", "--config",
                              str(tmp_path / "smtp-offload.toml")], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 2 and str(broken / "en" / "notice.html") in checked.stderr, checked.stderr


# --- size ---------------------------------------------------------------------------------------

def test_the_worst_case_notice_fits_the_budget_the_planner_reserves():
    """A 100-character link, names as long as a notice shows them, of 4-byte characters
    (12 bytes each once quoted-printable), the longest sentences of every language."""
    from smtp_offload.notices.sample import sample_items

    wide = "\U0001f4c4"
    worst = []
    for it in sample_items():
        facts = {k: wide * FACT_MAX if k in ("file", "member") else v for k, v in it.facts.items()}
        worst.append(dataclasses.replace(it, name=wide * NAME_MAX, facts=facts, link=LONG_LINK if it.link else "",
                                         quarantine_id="eu-0123456789abcdef" if it.state == "removed" else ""))
    assert len(LONG_LINK) == 100
    for language in LANGUAGES:
        n = Notices(NoticesConfig(language=language), upload_links=True)
        for count in (1, 2, 5):
            for i in range(len(worst)):
                items = (worst[i:] + worst)[:count]
                size = sum(len(codec.encode(part.encode(), "quoted-printable")) for part in n.render_items(items))
                assert size <= NOTICE_BUDGET + NOTICE_PER_FILE * count, (language, items[0].rule, count, size)


# --- through the real proxy ---------------------------------------------------------------------

def test_a_german_notice_arrives_downstream_in_both_parts(make_proxy, sink):
    proxy = make_proxy({"notices": {"language": "de"}, "policy": {"offload_over_bytes": 200_000}})
    photos = samples.big_pdf(300_000)
    body = multipart(text("Guten Tag,\r\nanbei die Unterlagen.\r\n"),
                     text("<html><body><p>Guten Tag, anbei die Unterlagen.</p></body></html>", subtype="html"),
                     subtype="alternative")
    code, reply = proxy.send(message(multipart(body, attachment(EXE, "Rechnung.pdf", "application/pdf"),
                                               attachment(photos, "Schadenfotos.pdf", "application/pdf"))))
    assert code == 250, reply
    got = sink.messages[-1].content
    assert attachment_payloads(got) == {}
    plain, html = body_text(got), body_text(got, "html")
    assert plain.startswith("Das Mail-Gateway hat diese Nachricht vor der Zustellung geändert:\r\n")
    assert "Die Datei ist ein Windows-Programm, getarnt als PDF-Dokument." in said(got)
    assert "„Schadenfotos.pdf“ (293,0 KiB, PDF-Dokument) war zu groß für einen Anhang." in plain
    (url,) = LINK.findall(plain.encode())
    assert url.decode() in plain.split("\r\n")  # alone on its line
    assert f'<a href="{url.decode()}" style="color:#1f5fbf;font-weight:bold">Schadenfotos.pdf</a>' in html
    assert "Die Datei ist ein Windows-Programm, getarnt als PDF-Dokument." in html
    assert html.index("<body>") < html.index("Das Mail-Gateway") < html.index("Guten Tag")
