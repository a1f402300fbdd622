"""Every SMTP reply this proxy writes, in one catalogue: code, enhanced status (RFC 3463), text.

A reply is a value: `str(R.BYE)` is the line the client reads; one with fields in its text is
filled with `R.RELAY_DENIED.format(domain=...)`; one a stage raises becomes an error with
`raise R.STORAGE_DOWN.error(detail=...)`. Nothing else in the product writes a reply code.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import PermanentError, TemporaryError


@dataclass(frozen=True)
class Reply:
    code: int
    status: str
    text: str

    def __str__(self) -> str:
        return self._say(self.text)

    def format(self, **fields: object) -> str:
        return self._say(self.text.format(**fields))

    def _say(self, text: str) -> str:
        # No status: the replies RFC 2034 leaves without one (220, 334, 354).
        return f"{self.code} {self.status} {text}" if self.status else f"{self.code} {text}"

    @property
    def line(self) -> bytes:
        """The reply as written to the socket by hand (before a session exists, or to close it)."""
        return f"{self}\r\n".encode("ascii")

    def error(self, *, detail: str | None = None, **fields: object) -> TemporaryError | PermanentError:
        """The exception a stage raises to end the transaction with this reply."""
        cls = TemporaryError if self.code < 500 else PermanentError
        return cls(self.text.format(**fields), code=self.code, status=self.status, detail=detail)


# -- session --------------------------------------------------------------------------------
OK = Reply(250, "2.0.0", "Ok")
SENDER_OK = Reply(250, "2.1.0", "Ok")
QUEUED = Reply(250, "2.0.0", "Ok: queued as {queue_id}")
BYE = Reply(221, "2.0.0", "Bye")
BUSY = Reply(451, "4.3.2", "System busy, try again later")
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down, try again later")
TOO_MANY = Reply(421, "4.3.2", "Too many connections, try again later")
TOO_MANY_FROM_CLIENT = Reply(421, "4.7.0", "Too many connections from your address, try again later")
IDLE_TOO_LONG = Reply(421, "4.4.2", "Idle for too long, closing connection")
COMMAND_TOO_SLOW = Reply(421, "4.4.2", "Command line took too long to arrive, closing connection")
ENVELOPE_TOO_SLOW = Reply(421, "4.4.2", "Too long without starting a message, closing connection")
DATA_TOO_SLOW = Reply(421, "4.4.2", "Message took too long to arrive, closing")
CONNECTION_CLOSED = Reply(421, "4.4.2", "Connection closed")
TLS_FAILED = Reply(454, "4.7.0", "TLS handshake failed")
TLS_ACTIVE = Reply(503, "5.5.1", "TLS already active")
TLS_IN_TRANSACTION = Reply(503, "5.5.1", "STARTTLS not allowed during a mail transaction")
AUTH_DISABLED = Reply(502, "5.5.1", "Authentication not enabled")
NEED_RCPT = Reply(503, "5.5.1", "Need RCPT command")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long (RFC 5321 4.5.3.1.6)")
INTERNAL = Reply(451, "4.3.0", "Internal error; try again later")
DATA_GO_AHEAD = Reply(354, "", "End data with <CR><LF>.<CR><LF>")  # RFC 2034: no status on 354
DATA_SYNTAX = Reply(501, "5.5.4", "Syntax: DATA")
HOOKLESS_OK = Reply(250, "2.0.0", "OK")  # aiosmtpd's "250 OK" when a command has no handler hook
# aiosmtpd's own refusals, as smtp/replies.enhance() rewrites them (texts kept from aiosmtpd).
NESTED_MAIL = Reply(503, "5.5.1", "Nested MAIL command")
NEED_MAIL = Reply(503, "5.5.1", "Need MAIL command")
NEED_HELO = Reply(503, "5.5.1", "Send HELO first")
STARTTLS_FIRST = Reply(530, "5.7.0", "Must issue a STARTTLS command first")

# -- envelope -------------------------------------------------------------------------------
BAD_SENDER = Reply(501, "5.1.7", "Sender address must be user@domain or <>")
BAD_RECIPIENT = Reply(550, "5.1.3", "Recipient address must be user@domain")
ROUTING_REFUSED = Reply(550, "5.7.1", "Sender-specified routing is not allowed")
LITERAL_REFUSED = Reply(550, "5.7.1", "Relaying denied: address literals are not accepted")
RELAY_DENIED = Reply(550, "5.7.1", "Relaying denied: this server does not accept mail for {domain}")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
NO_SMTPUTF8 = Reply(553, "5.6.7", "The destination does not accept internationalized (SMTPUTF8) mail")
TRANSACTION_LOST = Reply(451, "4.4.3", "Downstream transaction lost; try again later")

# -- message --------------------------------------------------------------------------------
TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
BARE_NEWLINES = Reply(554, "5.5.2", "Message has bare CR or LF line endings; lines must end with CRLF "
                                    "(RFC 5321 2.3.8)")
STRUCTURE_REFUSED = Reply(550, "5.6.0", "Message structure refused: {reason}")
AMBIGUOUS_MIME = Reply(550, "5.6.0", "Ambiguous MIME structure: {reason}")
POLICY_REFUSED = Reply(550, "5.7.1", "{reason}")
EIGHT_BIT = Reply(554, "5.6.3", "Message has 8-bit content the destination cannot accept")
STORAGE_DOWN = Reply(451, "4.3.0", "Attachment storage is unavailable and the message is too large to deliver "
                                   "without it; try again later")

# -- downstream -----------------------------------------------------------------------------
DOWNSTREAM_UNAVAILABLE = Reply(451, "4.4.1", "Downstream mail server unavailable; try again later")
DOWNSTREAM_PROTOCOL = Reply(451, "4.4.2", "Downstream protocol error; try again later")
DOWNSTREAM_CHANGED = Reply(451, "4.4.3", "Downstream changed its answer for a recipient; try again later")

# -- the sample harness's recording downstream (smtp/sink.py) --------------------------------
RECORDED = Reply(250, "2.0.0", "Ok: recorded")
