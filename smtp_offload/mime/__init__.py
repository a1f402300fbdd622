"""Byte-level MIME: locate parts, decode payloads, rewrite by splicing the original bytes."""
