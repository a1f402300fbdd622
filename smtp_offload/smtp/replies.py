"""Every reply the sender sees carries an enhanced status code (RFC 3463), ours or aiosmtpd's.

aiosmtpd's built-in replies ("503 Error: need MAIL command", its SIZE refusal, ...)
have none; `enhance()` gives them one without touching the replies our
handler already wrote.
"""

from __future__ import annotations

import re

from .. import replies as R

_HAS_STATUS = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}(\s|$)")
# aiosmtpd's exact texts (aiosmtpd/smtp.py) -> the catalogue's reply.
_SPECIFIC = {
    "552 Error: message size exceeds fixed maximum message size": str(R.TOO_BIG),
    "503 Error: nested MAIL command": str(R.NESTED_MAIL),
    "503 Error: need MAIL command": str(R.NEED_MAIL),
    "503 Error: send HELO first": str(R.NEED_HELO),
    "530 Must issue a STARTTLS command first": str(R.STARTTLS_FIRST),
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
