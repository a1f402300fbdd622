"""Kept for imports from before smtp_offload.notices: the notice in English, shipped templates."""

from __future__ import annotations

from .notices import render

__all__ = ["render"]
