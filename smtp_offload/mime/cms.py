"""Opaque S/MIME signing (application/pkcs7-mime; smime-type=signed-data): the signed MIME entity
travels inside a CMS SignedData blob (RFC 8551 3.5.2, RFC 5652 5), where only a client that
unwraps it sees it. Outlook, Thunderbird and Apple Mail all do, and show its attachments, so we
unwrap it too. The signature is not verified: we only need the content every client shows.
"""

from __future__ import annotations

from asn1crypto import cms

# The S/MIME wrapper types (x- is the pre-RFC 2633 name Outlook still sends) and the extension a
# client maps to them when the part is only labelled application/octet-stream.
PKCS7_TYPES = ("application/pkcs7-mime", "application/x-pkcs7-mime")
PKCS7_EXTENSION = "p7m"


def signed_content(blob: bytes) -> bytes | None:
    """The content a CMS/PKCS #7 SignedData blob carries inside it, or None when it is no such
    blob (enveloped data, a signature without content, certificates only, junk).

    asn1crypto reads DER and BER (indefinite lengths, chunked octet strings, as `openssl cms
    -stream` writes) within the blob's bounds and raises ValueError on anything malformed,
    including nesting past its recursion limit; the caller treats None as "cannot be inspected".
    """
    try:
        info = cms.ContentInfo.load(blob)
        if info["content_type"].native != "signed_data":
            return None
        encap = info["content"]["encap_content_info"]
        if encap["content_type"].native != "data":
            return None
        content = encap["content"].native
    except Exception:  # asn1crypto raises ValueError, TypeError, KeyError... on hostile input
        return None
    return content if isinstance(content, bytes) and content else None
