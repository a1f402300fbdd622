"""Static knowledge about file types: aliases, extensions, families, names.

Everything is keyed by a *canonical* MIME type (what sniff() reports). Claims
made by senders (Content-Type, file-name extension) are first mapped onto the
same canonical types, so the rules only ever compare canonical strings.

The tables are deliberately lenient where real mail software is sloppy
(xlsx sent as application/vnd.ms-excel, CSV as Excel, OOXML as zip): a false
"spoofed" verdict strips a legitimate attachment, which is worse for a
recipient than letting a harmless mislabel through.
"""

from __future__ import annotations

# --- Canonical detected types that need a name in code ----------------------

OCTET = "application/octet-stream"
EMPTY = "application/x-empty"
TEXT = "text/plain"
ZIP = "application/zip"
OLE = "application/x-ole-storage"
PDF = "application/pdf"
PE = "application/x-msdownload"
ELF = "application/x-executable"
MACHO = "application/x-mach-binary"
MSI = "application/x-msi"
JAVA_CLASS = "application/java-vm"
JAR = "application/java-archive"
LNK = "application/x-ms-shortcut"
SHELL = "text/x-shellscript"
SCRIPT = "text/x-script"
HTML = "text/html"
SVG = "image/svg+xml"
ONENOTE = "application/onenote"
# Disk images: Windows mounts them on a double-click, and files inside lose the
# "downloaded from the internet" mark, which is why malware ships in them.
ISO = "application/x-iso9660-image"  # ISO 9660 and UDF discs
VHD = "application/x-vhd"
VHDX = "application/x-vhdx"
DMG = "application/x-apple-diskimage"
DISK = "application/x-raw-disk-image"  # a FAT/NTFS/exFAT volume (.img)

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
ODT = "application/vnd.oasis.opendocument.text"
ODS = "application/vnd.oasis.opendocument.spreadsheet"
ODP = "application/vnd.oasis.opendocument.presentation"
ODG = "application/vnd.oasis.opendocument.graphics"
EPUB = "application/epub+zip"
# OOXML carrying a VBA project or Excel 4.0 macro sheets: sniff() tells these
# apart from their macro-free twins, which Office refuses to hold macros.
DOCM = "application/vnd.ms-word.document.macroenabled.12"
XLSM = "application/vnd.ms-excel.sheet.macroenabled.12"
PPTM = "application/vnd.ms-powerpoint.presentation.macroenabled.12"

# Declared types that say "I don't know": they claim nothing about the bytes.
NO_CLAIM = frozenset({
    "application/octet-stream", "application/unknown", "binary/octet-stream",
    "application/binary", "application/x-unknown", "unknown/unknown",
    "application/force-download", "application/x-download", "application/download",
    "application/x-octet-stream", "content/unknown", "application/save",
})

# Non-canonical spellings seen in the wild -> canonical type.
ALIASES: dict[str, str] = {
    # images
    "image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/jpe": "image/jpeg",
    "image/x-citrix-jpeg": "image/jpeg", "image/jfif": "image/jpeg",
    "image/x-png": "image/png", "image/x-citrix-png": "image/png",
    "image/tif": "image/tiff", "image/x-tiff": "image/tiff", "image/x-tif": "image/tiff",
    "image/x-ms-bmp": "image/bmp", "image/x-bmp": "image/bmp", "image/x-windows-bmp": "image/bmp",
    "image/vnd.microsoft.icon": "image/x-icon", "image/ico": "image/x-icon",
    "image/heif": "image/heic", "image/jp2": "image/jpx", "image/x-jpeg2000": "image/jpx",
    "image/psd": "image/vnd.adobe.photoshop", "image/x-photoshop": "image/vnd.adobe.photoshop",
    "application/x-photoshop": "image/vnd.adobe.photoshop",
    # documents
    "application/x-pdf": PDF, "application/acrobat": PDF, "applications/vnd.pdf": PDF,
    "application/vnd.pdf": PDF, "text/pdf": PDF, "text/x-pdf": PDF,
    "text/rtf": "application/rtf", "application/x-rtf": "application/rtf", "text/richtext": "application/rtf",
    "application/x-msword": "application/msword", "application/doc": "application/msword",
    "application/x-msexcel": "application/vnd.ms-excel", "application/excel": "application/vnd.ms-excel",
    "application/x-excel": "application/vnd.ms-excel", "application/x-ms-excel": "application/vnd.ms-excel",
    "application/msexcel": "application/vnd.ms-excel", "application/xls": "application/vnd.ms-excel",
    "application/mspowerpoint": "application/vnd.ms-powerpoint",
    "application/x-mspowerpoint": "application/vnd.ms-powerpoint",
    "application/powerpoint": "application/vnd.ms-powerpoint",
    "application/x-msg": "application/vnd.ms-outlook", "application/x-outlook-msg": "application/vnd.ms-outlook",
    # archives
    "application/x-zip-compressed": ZIP, "application/x-zip": ZIP, "application/zip-compressed": ZIP,
    "multipart/x-zip": ZIP,
    "application/x-gzip": "application/gzip", "application/x-gunzip": "application/gzip",
    "application/gzipped": "application/gzip", "application/x-tgz": "application/gzip",
    "application/x-compressed-tar": "application/gzip",
    "application/x-rar": "application/x-rar-compressed", "application/vnd.rar": "application/x-rar-compressed",
    "application/x-7z": "application/x-7z-compressed",
    "application/x-bzip": "application/x-bzip2", "application/x-xz-compressed-tar": "application/x-xz",
    "application/x-zstd": "application/zstd",
    "application/x-java-archive": JAR, "application/x-jar": JAR,
    # audio / video
    "audio/mp3": "audio/mpeg", "audio/x-mp3": "audio/mpeg", "audio/mpeg3": "audio/mpeg",
    "audio/x-mpeg": "audio/mpeg", "audio/mpg": "audio/mpeg",
    "audio/wav": "audio/x-wav", "audio/wave": "audio/x-wav", "audio/vnd.wave": "audio/x-wav",
    "audio/flac": "audio/x-flac", "audio/x-m4a": "audio/mp4", "audio/m4a": "audio/mp4",
    "audio/aiff": "audio/x-aiff", "audio/x-midi": "audio/midi", "audio/mid": "audio/midi",
    "audio/x-aac": "audio/aac",
    "video/avi": "video/x-msvideo", "video/msvideo": "video/x-msvideo",
    "video/mpg": "video/mpeg", "video/x-mpeg": "video/mpeg",
    # fonts
    "application/font-woff": "font/woff", "application/x-font-woff": "font/woff",
    "application/font-woff2": "font/woff2",
    "application/x-font-ttf": "font/ttf", "application/x-font-truetype": "font/ttf",
    "application/font-sfnt": "font/ttf", "application/x-font-otf": "font/otf",
    "application/x-font-opentype": "font/otf", "application/vnd.ms-opentype": "font/otf",
    # text
    "text/x-vcard": "text/vcard", "text/directory": "text/vcard", "text/x-vcalendar": "text/calendar",
    "application/ics": "text/calendar",
    "text/comma-separated-values": "text/csv", "text/x-csv": "text/csv",
    "application/csv": "text/csv", "application/x-csv": "text/csv",
    "text/x-markdown": "text/markdown", "text/xml": "application/xml",
    "application/x-sh": SHELL, "application/x-shellscript": SHELL, "text/x-sh": SHELL,
    # executables
    "application/x-msdos-program": PE, "application/x-dosexec": PE,
    "application/vnd.microsoft.portable-executable": PE, "application/x-ms-dos-executable": PE,
    "application/exe": PE, "application/x-exe": PE, "application/x-winexe": PE,
    "application/x-elf": ELF, "application/x-sharedlib": ELF, "application/x-pie-executable": ELF,
    "application/x-mach-o-executable": MACHO,
    "application/x-ms-installer": MSI, "application/x-ole-msi": MSI, "application/vnd.ms-msi": MSI,
    "application/x-java-applet": JAVA_CLASS, "application/x-java-class": JAVA_CLASS,
    "application/x-ms-ole-storage": OLE,
}

# filetype's own labels that differ from our canonical ones (keyed by its extension).
FILETYPE_FIXUPS: dict[str, tuple[str, str]] = {
    "woff": ("font/woff", "woff"), "woff2": ("font/woff2", "woff2"),
    "ttf": ("font/ttf", "ttf"), "otf": ("font/otf", "otf"),
}

# filetype matches on a few short, printable magics ("BZh", "ID3", "FWS", the
# UTF-8 bytes of Greek "βρ" for brotli, "BM" and "GIF" of a "BMW;..." or "GIF
# export" text). When the whole sample reads as text, those matches are
# coincidences, not files: a real one has binary fields (NULs) right after.
WEAK_FILETYPE = frozenset({
    "application/x-brotli", "audio/mpeg", "audio/aac", "application/x-bzip2",
    "application/x-shockwave-flash", "application/x-google-chrome-extension",
    "application/x-lzip", "application/x-nintendo-nes-rom",
    "image/bmp", "image/gif", "image/vnd.adobe.photoshop", "image/vnd.dwg", "image/x-xcf",
    "audio/ogg", "audio/x-flac", "audio/midi", "application/x-sqlite3",
})

# --- Office families ---------------------------------------------------------

WORD = frozenset({
    "application/msword", DOCX,
    "application/vnd.ms-word.document.macroenabled.12",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.template",
    "application/vnd.ms-word.template.macroenabled.12",
})
EXCEL = frozenset({
    "application/vnd.ms-excel", XLSX,
    "application/vnd.ms-excel.sheet.macroenabled.12",
    "application/vnd.ms-excel.sheet.binary.macroenabled.12",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.template",
    "application/vnd.ms-excel.template.macroenabled.12",
    "application/vnd.ms-excel.addin.macroenabled.12",
})
POWERPOINT = frozenset({
    "application/vnd.ms-powerpoint", PPTX,
    "application/vnd.ms-powerpoint.presentation.macroenabled.12",
    "application/vnd.openxmlformats-officedocument.presentationml.slideshow",
    "application/vnd.ms-powerpoint.slideshow.macroenabled.12",
    "application/vnd.openxmlformats-officedocument.presentationml.template",
})
# Everything that may legitimately be stored in an OLE2 container, including
# OOXML, which Office wraps in OLE2 when it is password-protected.
OLE_FAMILY = WORD | EXCEL | POWERPOINT | {
    OLE, "application/vnd.ms-outlook", "application/vnd.visio",
    "application/x-mspublisher", "application/vnd.ms-project", "application/vnd.ms-works",
}
ODF = frozenset({ODT, ODS, ODP, ODG})
OOXML = frozenset({DOCX, XLSX, PPTX})
MACRO_OOXML = frozenset({DOCM, XLSM, PPTM})
# Claims that promise "no macros": contradicted by a document that has them.
MACRO_FREE = frozenset({
    DOCX, XLSX, PPTX,
    "application/vnd.openxmlformats-officedocument.wordprocessingml.template",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.template",
    "application/vnd.openxmlformats-officedocument.presentationml.slideshow",
    "application/vnd.openxmlformats-officedocument.presentationml.template",
})
# Types that are zip archives underneath: a zip claim never contradicts them.
ZIP_BASED = (WORD | EXCEL | POWERPOINT | ODF | {EPUB, JAR, ZIP}) - {
    "application/msword", "application/vnd.ms-excel", "application/vnd.ms-powerpoint",
}

# --- Text --------------------------------------------------------------------

# Claims that are text (no magic bytes) besides text/* and message/*.
TEXT_CLAIMS = frozenset({
    "application/json", "application/xml", "application/javascript", "application/x-javascript",
    "application/ecmascript", "image/svg+xml", "application/sql", "application/x-yaml",
    "application/yaml", "application/toml", "application/mbox", "application/x-tex",
    "application/x-latex", "application/x-subrip", "application/x-httpd-php",
    "application/x-perl", "application/x-python", "application/x-ruby", SHELL,
})


def is_text_claim(claim: str) -> bool:
    """True for claimed types whose content is text and has no magic bytes."""
    major, _, sub = claim.partition("/")
    return (
        major in ("text", "message")
        or claim in TEXT_CLAIMS
        or (major == "application" and (sub.endswith("+xml") or sub.endswith("+json")))
    )


# --- Groups of mutually compatible types --------------------------------------

# Same container, different labels: any member may be detected for any other.
_GROUPS = [
    {"image/png", "image/apng"},
    {"video/mp4", "audio/mp4", "video/x-m4v", "video/quicktime", "video/3gpp", "video/3gpp2",
     "audio/3gpp", "application/mp4"},
    {"audio/ogg", "video/ogg", "application/ogg", "audio/opus", "audio/vorbis"},
    {"video/x-matroska", "video/webm", "audio/webm", "audio/x-matroska"},
    {"video/x-ms-wmv", "video/x-ms-asf", "audio/x-ms-wma"},
    {"font/ttf", "font/otf", "font/sfnt", "font/collection"},
    {"image/tiff", "image/x-canon-cr2"},
    {"application/gzip", "application/x-gtar"},
    {ODT, "application/vnd.oasis.opendocument.text-template"},
    {ODS, "application/vnd.oasis.opendocument.spreadsheet-template"},
    {ODP, "application/vnd.oasis.opendocument.presentation-template"},
    {ISO, DISK},  # ".img" files are as often ISO 9660 discs as raw volumes
]

ACCEPTS: dict[str, frozenset[str]] = {}
for _g in _GROUPS:
    for _t in _g:
        ACCEPTS[_t] = frozenset(_g)
# Containers: a detected container is consistent with claims of what it may hold.
ACCEPTS[ZIP] = ZIP_BASED
ACCEPTS[OLE] = OLE_FAMILY
ACCEPTS[DOCX] = WORD | {ZIP}
ACCEPTS[XLSX] = EXCEL | {ZIP}
ACCEPTS[PPTX] = POWERPOINT | {ZIP}
ACCEPTS[DOCM] = (WORD - MACRO_FREE) | {ZIP}
ACCEPTS[XLSM] = (EXCEL - MACRO_FREE) | {ZIP}
ACCEPTS[PPTM] = (POWERPOINT - MACRO_FREE) | {ZIP}
for _t in ODF | {EPUB, JAR}:
    ACCEPTS[_t] = ACCEPTS.get(_t, frozenset({_t})) | {ZIP}
ACCEPTS["application/rtf"] = WORD  # Word saves and opens RTF under .doc

# --- Extensions ----------------------------------------------------------------

_EXT_GROUPS: dict[str, str] = {
    PDF: "pdf",
    "image/png": "png apng", "image/jpeg": "jpg jpeg jpe jfif pjpeg pjp", "image/gif": "gif",
    "image/webp": "webp", "image/tiff": "tif tiff", "image/bmp": "bmp dib", "image/x-icon": "ico",
    "image/vnd.adobe.photoshop": "psd", "image/heic": "heic heif", "image/avif": "avif",
    "image/jpx": "jp2 jpx jpf", "image/vnd.ms-photo": "jxr wdp hdp", "image/x-canon-cr2": "cr2",
    "image/vnd.dwg": "dwg", "image/x-xcf": "xcf",
    "audio/mpeg": "mp3", "audio/mp4": "m4a m4b", "audio/aac": "aac", "audio/ogg": "ogg oga opus",
    "video/ogg": "ogv", "audio/x-flac": "flac", "audio/x-wav": "wav", "audio/amr": "amr",
    "audio/x-aiff": "aif aiff", "audio/midi": "mid midi",
    "video/mp4": "mp4", "video/x-m4v": "m4v", "video/quicktime": "mov qt", "video/3gpp": "3gp 3g2",
    "video/x-matroska": "mkv mka", "video/webm": "webm", "video/x-msvideo": "avi",
    "video/x-ms-wmv": "wmv wma asf", "video/mpeg": "mpg mpeg", "video/x-flv": "flv",
    "font/woff": "woff", "font/woff2": "woff2", "font/ttf": "ttf", "font/otf": "otf",
    ZIP: "zip", "application/x-rar-compressed": "rar", "application/x-7z-compressed": "7z",
    "application/gzip": "gz tgz", "application/x-bzip2": "bz2 tbz2", "application/x-xz": "xz txz",
    "application/x-tar": "tar", "application/zstd": "zst", "application/vnd.ms-cab-compressed": "cab",
    "application/x-rpm": "rpm", "application/x-deb": "deb", "application/x-lzip": "lz",
    "application/x-lz4": "lz4", "application/x-lzop": "lzo", "application/x-sqlite3": "sqlite sqlite3",
    "application/dicom": "dcm", "application/x-shockwave-flash": "swf",
    "application/x-google-chrome-extension": "crx", "application/wasm": "wasm",
    "application/postscript": "ps eps", "application/rtf": "rtf",
    "application/msword": "doc dot", DOCX: "docx", "application/vnd.ms-excel": "xls xlt xla",
    XLSX: "xlsx", "application/vnd.ms-powerpoint": "ppt pps pot", PPTX: "pptx",
    "application/vnd.ms-word.document.macroenabled.12": "docm",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.template": "dotx",
    "application/vnd.ms-word.template.macroenabled.12": "dotm",
    "application/vnd.ms-excel.sheet.macroenabled.12": "xlsm",
    "application/vnd.ms-excel.sheet.binary.macroenabled.12": "xlsb",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.template": "xltx",
    "application/vnd.ms-excel.template.macroenabled.12": "xltm",
    "application/vnd.ms-excel.addin.macroenabled.12": "xlam",
    "application/vnd.ms-powerpoint.presentation.macroenabled.12": "pptm",
    "application/vnd.openxmlformats-officedocument.presentationml.slideshow": "ppsx",
    "application/vnd.ms-powerpoint.slideshow.macroenabled.12": "ppsm",
    "application/vnd.openxmlformats-officedocument.presentationml.template": "potx",
    "application/vnd.ms-outlook": "msg", "application/vnd.visio": "vsd",
    "application/x-mspublisher": "pub", "application/vnd.ms-project": "mpp",
    ODT: "odt", ODS: "ods", ODP: "odp", ODG: "odg",
    "application/vnd.oasis.opendocument.text-template": "ott",
    "application/vnd.oasis.opendocument.spreadsheet-template": "ots",
    "application/vnd.oasis.opendocument.presentation-template": "otp",
    EPUB: "epub",
    PE: "exe dll sys scr cpl ocx drv efi", MSI: "msi msp mst", JAVA_CLASS: "class", JAR: "jar",
    LNK: "lnk", ELF: "elf so", ONENOTE: "one", ISO: "iso", DISK: "img", VHD: "vhd",
    VHDX: "vhdx", DMG: "dmg", SHELL: "sh bash zsh ksh csh", "text/x-python": "py",
    "text/x-perl": "pl pm", "text/x-ruby": "rb", "text/javascript": "js mjs",
    # text formats
    TEXT: "txt text log ini cfg conf nfo properties diff patch tex",
    "text/csv": "csv", "text/tab-separated-values": "tsv tab", "text/markdown": "md markdown",
    "text/x-rst": "rst", "application/json": "json", "application/xml": "xml", "text/html": "html htm",
    "application/xhtml+xml": "xhtml", "text/css": "css", "application/yaml": "yaml yml",
    "application/toml": "toml", "text/calendar": "ics ifb vcs", "text/vcard": "vcf vcard",
    "message/rfc822": "eml", "application/mbox": "mbox", "image/svg+xml": "svg",
    "application/x-subrip": "srt", "text/vtt": "vtt", "application/sql": "sql",
}
EXTENSIONS: dict[str, str] = {
    ext: mime for mime, exts in _EXT_GROUPS.items() for ext in exts.split()
}

# --- Categories (usable in InspectPolicy.blocked_types / allowed_types) ---------

SCRIPTS = frozenset({SHELL, SCRIPT, "text/x-python", "text/x-perl", "text/x-ruby",
                     "text/javascript", "application/x-httpd-php"})
CATEGORIES: dict[str, frozenset[str]] = {
    "executable": frozenset({PE, ELF, MACHO, MSI, JAVA_CLASS, LNK}) | SCRIPTS,
    "archive": frozenset({
        ZIP, JAR, "application/x-rar-compressed", "application/x-7z-compressed",
        "application/gzip", "application/x-bzip2", "application/x-xz", "application/x-tar",
        "application/zstd", "application/vnd.ms-cab-compressed", "application/x-lzip",
        "application/x-lz4", "application/x-lzop", "application/x-compress",
        "application/x-brotli", "application/x-rpm", "application/x-deb",
        "application/x-unix-archive",
    }),
    "disk-image": frozenset({ISO, VHD, VHDX, DMG, DISK}),
    # OneNote notebooks embed files that open on a click: a 2023 malware favourite.
    "onenote": frozenset({ONENOTE}),
}
# What InspectPolicy blocks by content unless configured otherwise.
DEFAULT_BLOCKED_TYPES = frozenset({"executable", "disk-image", "onenote"})
# Detected types that are ZIP archives underneath (what archive.inspect reads).
ZIP_CONTAINERS = frozenset({ZIP, JAR, EPUB, DOCX, XLSX, PPTX, DOCM, XLSM, PPTM}) | ODF | {
    "application/vnd.oasis.opendocument.text-template",
    "application/vnd.oasis.opendocument.spreadsheet-template",
    "application/vnd.oasis.opendocument.presentation-template",
}
# Scripts are text: a script named .txt is blocked, but not "disguised".
for _t in SCRIPTS:
    ACCEPTS[_t] = frozenset({_t})

# Extensions Windows (or a double-click) will run, as in Outlook's Level 1 list.
DEFAULT_BLOCKED_EXTENSIONS = frozenset("""
    exe scr com pif bat cmd ps1 psm1 ps1xml psc1 msh vbs vbe vb js jse wsf wsh wsc ws sct
    hta msi msp mst msix msixbundle appx appxbundle lnk cpl jar reg sh scf inf chm hlp msc
    gadget application appref-ms url xll settingcontent-ms library-ms shb shs pcd mde ade adp
    iso img vhd vhdx
""".split())

# --- Human names (with article) for reasons ------------------------------------

NAMES: dict[str, str] = {
    PDF: "a PDF", "image/png": "a PNG image", "image/apng": "an animated PNG image",
    "image/jpeg": "a JPEG image", "image/gif": "a GIF image", "image/webp": "a WebP image",
    "image/tiff": "a TIFF image", "image/bmp": "a BMP image", "image/x-icon": "an icon file",
    "image/heic": "a HEIC image", "image/avif": "an AVIF image", "image/svg+xml": "an SVG image",
    "image/vnd.adobe.photoshop": "a Photoshop image",
    "audio/mpeg": "an MP3 audio file", "audio/x-wav": "a WAV audio file", "audio/mp4": "an M4A audio file",
    "audio/ogg": "an Ogg audio file", "audio/x-flac": "a FLAC audio file",
    "video/mp4": "an MP4 video", "video/quicktime": "a QuickTime video", "video/x-msvideo": "an AVI video",
    "video/x-matroska": "a Matroska video", "video/webm": "a WebM video", "video/mpeg": "an MPEG video",
    ZIP: "a ZIP archive", "application/x-rar-compressed": "a RAR archive",
    "application/x-7z-compressed": "a 7-Zip archive", "application/gzip": "a gzip archive",
    "application/x-tar": "a tar archive", "application/x-bzip2": "a bzip2 archive",
    "application/x-xz": "an xz archive", "application/vnd.ms-cab-compressed": "a CAB archive",
    "application/rtf": "an RTF document", "application/postscript": "a PostScript document",
    "application/msword": "a Word document", DOCX: "a Word document",
    "application/vnd.ms-excel": "an Excel workbook", XLSX: "an Excel workbook",
    "application/vnd.ms-powerpoint": "a PowerPoint presentation", PPTX: "a PowerPoint presentation",
    "application/vnd.ms-outlook": "an Outlook message",
    OLE: "a Microsoft Office (OLE2) file", ODT: "an OpenDocument text", ODS: "an OpenDocument spreadsheet",
    ODP: "an OpenDocument presentation", ODG: "an OpenDocument drawing", EPUB: "an EPUB e-book",
    PE: "a Windows executable", ELF: "an ELF executable", MACHO: "a Mach-O executable",
    MSI: "a Windows Installer package", JAVA_CLASS: "a Java class file", JAR: "a Java archive",
    LNK: "a Windows shortcut", SHELL: "a shell script", SCRIPT: "a script",
    ONENOTE: "a OneNote notebook", ISO: "an ISO disk image", VHD: "a virtual hard disk image",
    VHDX: "a virtual hard disk image", DMG: "an Apple disk image", DISK: "a disk image",
    DOCM: "a macro-enabled Word document", XLSM: "a macro-enabled Excel workbook",
    PPTM: "a macro-enabled PowerPoint presentation",
    "text/x-python": "a Python script", "text/x-perl": "a Perl script", "text/x-ruby": "a Ruby script",
    "text/javascript": "a JavaScript file", "application/x-httpd-php": "a PHP script",
    TEXT: "plain text", "text/csv": "a CSV file", "text/html": "an HTML document",
    "text/calendar": "a calendar file", "text/vcard": "a contact card",
    "message/rfc822": "an email message", "application/json": "a JSON file",
    "application/xml": "an XML file",
    OCTET: "unrecognised binary data", EMPTY: "an empty file",
}

# The last extension of a "double extension" name (invoice.pdf.exe) that makes
# it a disguise: things Windows runs or mounts, scripts, and HTML (the usual
# lure for HTML smuggling: "invoice.pdf.html").
RISKY_EXTENSIONS = DEFAULT_BLOCKED_EXTENSIONS | frozenset(
    ext for ext, mime in EXTENSIONS.items()
    if mime in CATEGORIES["executable"] | CATEGORIES["disk-image"] | CATEGORIES["onenote"]
) | frozenset("py pyw php html htm xhtml shtml".split())

# Claims sniff() can check: a contradiction with one of these means something.
KNOWN_TYPES = frozenset(NAMES) | frozenset(ACCEPTS) | frozenset(EXTENSIONS.values())

# --- Claims the bytes must meet ---------------------------------------------------

# Formats every real file of which carries a signature sniff() recognises (by
# filetype or a structural check): unrecognised bytes claimed as one of these
# are not that format ("if you expect a PDF and magic says octet-stream, reject
# the file"). A wrong entry strips customers' documents, so a format whose
# signature is optional, weak, or not recognised in all its versions stays
# out, and its unrecognised bytes stay uncheckable:
#   audio/mpeg, audio/aac   MP3 without ID3 and raw ADTS are bare frame syncs
#   video/quicktime         old .mov files start with a moov/mdat atom, no ftyp
#   video/mpeg              program and transport streams, junk before the pack header
#   application/msword, application/vnd.ms-excel, application/vnd.ms-powerpoint,
#   Visio, Publisher, Project   Word 2, BIFF2-4 sheets (still written by report
#                           generators) and other pre-OLE2 versions are no OLE2 file
#   image/jpx               filetype knows only the jp2 brand, not jpx/jpf
#   image/vnd.dwg, image/x-xcf  pre-R10 drawings and version-0 XCF start differently
#   font/ttf, font/otf      Apple "true" fonts and collections are not recognised
#   application/x-tar, application/x-lz4, application/dicom, application/postscript,
#   application/x-shockwave-flash  v7 tar and legacy LZ4 have no magic, DICOM's
#                           preamble is optional, binary EPS and LZMA SWF are missed
#   DMG, raw disk images    UDRW images lack the koly block; .img is a dump of anything
SIGNATURE_TYPES = frozenset({
    PDF, "application/rtf",
    # images
    "image/png", "image/apng", "image/jpeg", "image/gif", "image/webp", "image/tiff", "image/x-canon-cr2",
    "image/bmp", "image/x-icon", "image/vnd.adobe.photoshop", "image/vnd.ms-photo", "image/heic", "image/avif",
    # audio and video containers (ISO base media files are told apart by sniff's ftyp check)
    "video/mp4", "audio/mp4", "video/x-m4v", "video/3gpp", "video/3gpp2", "audio/3gpp", "application/mp4",
    "audio/ogg", "video/ogg", "application/ogg", "audio/opus", "audio/vorbis",
    "video/x-matroska", "video/webm", "audio/webm", "audio/x-matroska",
    "video/x-ms-wmv", "video/x-ms-asf", "audio/x-ms-wma",
    "audio/x-flac", "audio/x-wav", "audio/amr", "audio/x-aiff", "audio/midi", "video/x-msvideo", "video/x-flv",
    "font/woff", "font/woff2",
    # archives and other binary containers
    ZIP, "application/x-rar-compressed", "application/x-7z-compressed", "application/gzip",
    "application/x-bzip2", "application/x-xz", "application/zstd", "application/vnd.ms-cab-compressed",
    "application/x-lzip", "application/x-lzop", "application/x-rpm", "application/x-deb",
    "application/x-sqlite3", "application/wasm", "application/x-google-chrome-extension",
    # Office (OOXML is a zip, or OLE2 when password-protected), OpenDocument, EPUB, Java
    OLE, "application/vnd.ms-outlook", EPUB, JAR, *(MACRO_FREE | MACRO_OOXML), *ODF,
    "application/vnd.ms-word.template.macroenabled.12", "application/vnd.ms-excel.sheet.binary.macroenabled.12",
    "application/vnd.ms-excel.template.macroenabled.12", "application/vnd.ms-excel.addin.macroenabled.12",
    "application/vnd.ms-powerpoint.slideshow.macroenabled.12",
    "application/vnd.oasis.opendocument.text-template",
    "application/vnd.oasis.opendocument.spreadsheet-template",
    "application/vnd.oasis.opendocument.presentation-template",
    # programs, shortcuts, notebooks and disk images (scripts are text)
    PE, ELF, MACHO, MSI, JAVA_CLASS, LNK, ONENOTE, ISO, VHD, VHDX,
})
