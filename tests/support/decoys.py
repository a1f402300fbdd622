"""HTML documents with decoy "<body>" text (in a comment, a style sheet, the title, a script,
a hidden container ...), for where the notice goes: test_mime_notice renders them in Chromium,
test_mime_units reads them with html.parser (Visible)."""

from __future__ import annotations

import html.parser


class Visible(html.parser.HTMLParser):
    """Records where text that a browser shows appears (outside comments, <head>, raw text)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.hidden = 0
        self.shown: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in ("title", "style", "script", "textarea", "template"):
            self.hidden += 1

    def handle_endtag(self, tag):
        if tag in ("title", "style", "script", "textarea", "template"):
            self.hidden -= 1

    def handle_data(self, data):
        if not self.hidden:
            self.shown.append(data)


MARK = "NOTICE-MARK"
# Decoys that stdlib html.parser reads as browsers do (tests/test_mime_units.py checks the pure
# function with it); tests/test_mime_notice.py renders all of them, with BROWSER_ONLY, in a browser.
DECOYS = {
    "comment": "<html><head><!-- <body> --></head><body><p>text</p></body></html>",
    "style": "<html><head><style>/*<body>*/ p{}</style></head><body><p>text</p></body></html>",
    "title": "<html><head><title><body></title></head><body><p>text</p></body></html>",
    "script": '<html><head><script>var a = "<body>";</script></head><body><p>text</p></body></html>',
    "attribute": '<html><head><meta content="<body>"></head><body><p>text</p>',
    "no body tag": "<html><head><title>t</title></head><p>text</p></html>",
    "hidden container": '<div style="display:none"><body>hidden</div><p>text</p>',
    "text first": "Hello <b>agent</b>",
}
# Where html.parser (3.11) and browsers disagree, the place the HTML standard's tokenizer gives.
BROWSER_ONLY = {
    "script double escaped": ("<script><!--<script></script><body>--></script><body><p>text</p>",
                              "--></script><body><div>NOTICE-MARK</div><p>"),
    "cdata": ("<html><head><![CDATA[<body>]]></head><p>text</p>",
              "<![CDATA[<body><div>NOTICE-MARK</div>]]>"),  # a bogus comment up to the first ">"
    "empty comment": ("<!--><body>--><p>text</p>", "<!--><body><div>NOTICE-MARK</div>-->"),
}
