"""Recipient checks, Postfix style: return a reply to refuse, or None to go on."""

from __future__ import annotations

from .. import replies as R


def domain_accepted(domain: str, accepted: tuple[str, ...]) -> bool:
    """Exact match, or a subdomain when the entry starts with a dot (".example.com")."""
    d = domain.lower().rstrip(".")
    for a in accepted:
        if a.startswith("."):
            if d.endswith(a) and len(d) > len(a):
                return True
        elif d == a:
            return True
    return False


def check_sender(address: str) -> str | None:
    """The reverse-path must be the null path or local@domain (aiosmtpd takes a bare word)."""
    if address == "<>":
        return None
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return str(R.BAD_SENDER)
    return None


def check_recipient(address: str, accepted: tuple[str, ...]) -> str | None:
    # RFC 5321 4.5.1: "Postmaster" without a domain (any case) must be accepted: it is this
    # system's postmaster, and mail for it goes to the downstream's.
    if address.lower() == "postmaster":
        return None
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return str(R.BAD_RECIPIENT)
    # Sender-specified routing (user%other@ours, user!other@ours, "user@other"@ours) would
    # let a downstream relay onward: refuse like Postfix's allow_untrusted_routing = no.
    if any(c in local for c in "@%!"):
        return str(R.ROUTING_REFUSED)
    if domain.startswith("["):
        return str(R.LITERAL_REFUSED)
    if not domain_accepted(domain, accepted):
        return R.RELAY_DENIED.format(domain=_printable(domain))
    return None


def _printable(s: str) -> str:
    return "".join(c if 32 < ord(c) < 127 else "?" for c in s)[:100]
