"""Downstream SMTP client (aiosmtplib lives only here)."""

from .client import Downstream, Reply, Transaction

__all__ = ["Downstream", "Reply", "Transaction"]
