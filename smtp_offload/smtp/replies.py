"""Every reply the sender sees carries an enhanced status code (RFC 3463), ours or aiosmtpd's.

aiosmtpd's built-in replies ("503 Error: need MAIL command", its SIZE refusal, ...)
have none; `enhance()` gives them one without touching the replies our
handler already wrote.
"""

from __future__ import annotations

import re

_HAS_STATUS = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}(\s|$)")
_SPECIFIC = {
    "552 Error: message size exceeds fixed maximum message size":
        "552 5.3.4 Message size exceeds fixed maximum message size",
    "503 Error: nested MAIL command": "503 5.5.1 Nested MAIL command",
    "503 Error: need MAIL command": "503 5.5.1 Need MAIL command",
    "503 Error: send HELO first": "503 5.5.1 Send HELO first",
    "530 Must issue a STARTTLS command first": "530 5.7.0 Must issue a STARTTLS command first",
}
_DEFAULT_STATUS = {
    "250": "2.0.0", "251": "2.1.5", "252": "2.5.0", "221": "2.0.0",
    "421": "4.3.0", "450": "4.2.0", "451": "4.3.0", "452": "4.3.1", "454": "4.7.0",
    "500": "5.5.2", "501": "5.5.4", "502": "5.5.1", "503": "5.5.1", "504": "5.5.4",
    "530": "5.7.0", "534": "5.7.9", "535": "5.7.8", "538": "5.7.11", "550": "5.0.0",
    "551": "5.1.6", "552": "5.3.4", "553": "5.1.3", "554": "5.0.0", "555": "5.5.4",
}
# Replies RFC 2034 leaves without a status code.
_EXEMPT = {"220", "334", "354"}


def enhance(reply: str) -> str:
    if reply in _SPECIFIC:
        return _SPECIFIC[reply]
    code, sep, text = reply[:3], reply[3:4], reply[4:]
    if sep != " " or code in _EXEMPT or not code.isdigit() or _HAS_STATUS.match(reply):
        return reply
    status = _DEFAULT_STATUS.get(code, f"{code[0]}.0.0")
    if text.startswith("Error: "):
        text = text[len("Error: "):]
    return f"{code} {status} {text}".rstrip()
