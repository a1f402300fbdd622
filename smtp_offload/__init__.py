"""smtp-offload: an SMTP hop that judges attachments by their real bytes."""

__version__ = "0.1.0"
