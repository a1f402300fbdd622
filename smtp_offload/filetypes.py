"""File types as a person says them: "PDF document", "JPEG image", not "application/pdf".

The detected type (never the sender's claim) is what pages show; the MIME type stays beside
it in small print for whoever needs it. A type missing here is described by its family
("image", "video"...) or plainly as "File".
"""

from __future__ import annotations

_NAMES = {
    "application/pdf": "PDF document",
    "image/jpeg": "JPEG image",
    "image/png": "PNG image",
    "image/gif": "GIF image",
    "image/webp": "WebP image",
    "image/heic": "HEIC photo",
    "image/heif": "HEIF photo",
    "image/tiff": "TIFF image",
    "image/bmp": "BMP image",
    "image/svg+xml": "SVG drawing",
    "application/msword": "Word document",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "Word document",
    "application/vnd.ms-excel": "Excel workbook",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "Excel workbook",
    "application/vnd.ms-powerpoint": "PowerPoint presentation",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "PowerPoint presentation",
    "application/vnd.oasis.opendocument.text": "OpenDocument text",
    "application/vnd.oasis.opendocument.spreadsheet": "OpenDocument spreadsheet",
    "application/vnd.oasis.opendocument.presentation": "OpenDocument presentation",
    "application/rtf": "Rich Text document",
    "text/plain": "Text file",
    "text/csv": "CSV table",
    "text/html": "Web page",
    "application/xml": "XML file",
    "text/xml": "XML file",
    "application/json": "JSON file",
    "application/zip": "ZIP archive",
    "application/x-7z-compressed": "7-Zip archive",
    "application/x-rar-compressed": "RAR archive",
    "application/vnd.rar": "RAR archive",
    "application/gzip": "gzip archive",
    "application/x-tar": "tar archive",
    "message/rfc822": "Email message",
    "application/vnd.ms-outlook": "Outlook message",
    "audio/mpeg": "MP3 audio",
    "audio/wav": "WAV audio",
    "audio/x-wav": "WAV audio",
    "video/mp4": "MP4 video",
    "video/quicktime": "QuickTime video",
    "application/octet-stream": "File",
}
_FAMILIES = {"image": "Image", "video": "Video", "audio": "Audio recording", "text": "Text file"}


def describe(content_type: str | None) -> str:
    """`content_type` (parameters ignored, any case) in a person's words; "File" when unknown."""
    base = (content_type or "").split(";", 1)[0].strip().lower()
    if base in _NAMES:
        return _NAMES[base]
    return _FAMILIES.get(base.partition("/")[0], "File")
