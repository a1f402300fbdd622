"""Markup documents for the active-content tests: benign ones as real senders write them (an HTML
newsletter, e-invoices in UBL, XRechnung and Factur-X/ZUGFeRD), and hostile ones that run script
when opened (the red team's, each of which ran in headless Chromium)."""

from __future__ import annotations

import base64
import urllib.parse

XHTML_NS = "http://www.w3.org/1999/xhtml"
SVG_NS = "http://www.w3.org/2000/svg"
ICON = (f'<svg xmlns="{SVG_NS}" width="24" height="24" viewBox="0 0 24 24"><title>Mail</title>'
        '<path fill="#0a66c2" d="M2 4h20v16H2z"/><text x="4" y="16">online = yes</text></svg>')


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def newsletter() -> bytes:
    """A marketing newsletter as mail tools export it: Outlook conditionals, tables, inline styles,
    SVG and PNG icons as data: URLs (images run no script), tracking links, quotes in prose."""
    return f"""<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="{XHTML_NS}" xmlns:v="urn:schemas-microsoft-com:vml" xmlns:o="urn:schemas-microsoft-com:office:office">
<head>
<meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
<meta name="viewport" content="width=device-width, initial-scale=1.0" />
<title>Acme Weekly &ndash; "Online = yes" edition</title>
<!--[if gte mso 9]><xml><o:OfficeDocumentSettings><o:AllowPNG/><o:PixelsPerInch>96</o:PixelsPerInch>
</o:OfficeDocumentSettings></xml><![endif]-->
<style type="text/css">
  body {{ margin:0; padding:0; }} table {{ border-collapse:collapse; }}
  .btn {{ background:url("data:image/svg+xml;utf8,<svg xmlns='{SVG_NS}' width='8' height='8'><circle r='4'/></svg>"); }}
  @media only screen and (max-width:600px) {{ .col {{ width:100% !important; }} }}
</style>
</head>
<body style="margin:0;padding:0;background-color:#f4f4f4;">
<span style="display:none;font-size:1px;color:#f4f4f4;">Your weekly update &gt; see what's new</span>
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0" bgcolor="#f4f4f4">
 <tr><td align="center" style="padding:20px 0;">
  <table role="presentation" width="600" class="col" cellpadding="0" cellspacing="0" border="0" bgcolor="#ffffff">
   <tr><td style="padding:24px;font-family:Arial,sans-serif;">
     <img src="data:image/svg+xml;base64,{b64(ICON)}" width="24" height="24" alt="Mail icon &gt; inbox" />
     <img src="data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==" width="1" height="1" alt="" />
     <h1 style="font-size:22px;color:#333;">Hello "friend" &mdash; we're online!</h1>
     <p style="line-height:1.5;">Our status page says: status online = yes. Ask "online = yes?" and we'll answer.
       Use code "ONLINE=20" at checkout; it's valid until Friday (prices &lt; $10 &amp; &gt; $5).</p>
     <p><a href="https://click.example.com/t?u=https%3A%2F%2Fshop.example.com%2F&amp;utm_source=newsletter&amp;utm_medium=email&amp;online=1"
           style="background-color:#0a66c2;color:#fff;padding:10px 16px;text-decoration:none;" class="btn" target="_blank">Shop now &gt;</a></p>
     <!--[if mso]><v:roundrect xmlns:v="urn:schemas-microsoft-com:vml" href="https://shop.example.com/" style="height:40px;v-text-anchor:middle;width:200px;" arcsize="10%" fillcolor="#0a66c2"><center>Shop now</center></v:roundrect><![endif]-->
     <p style="font-size:11px;color:#999;">You receive this because you're subscribed. <a href="https://example.com/unsubscribe?id=42&amp;list=weekly">Unsubscribe</a> |
       <a href="mailto:news@example.com?subject=Question%20about%20%22online%22">write to us</a></p>
   </td></tr>
  </table>
 </td></tr>
</table>
<img src="https://track.example.com/open.gif?id=42" width="1" height="1" alt="" style="display:block" />
</body>
</html>
""".encode()


def ubl_invoice(customization: str = "urn:cen.eu:en16931:2017") -> bytes:
    """An EN 16931 invoice in UBL 2.1 with an embedded PDF copy (base64) and a note with quotes."""
    pdf = b64(b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n" * 40)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
         xmlns:cac="urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
         xmlns:cbc="urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2">
  <cbc:CustomizationID>{customization}</cbc:CustomizationID>
  <cbc:ProfileID>urn:fdc:peppol.eu:2017:poacc:billing:01:1.0</cbc:ProfileID>
  <cbc:ID>INV-2026-1042</cbc:ID>
  <cbc:IssueDate>2026-11-23</cbc:IssueDate>
  <cbc:InvoiceTypeCode>380</cbc:InvoiceTypeCode>
  <cbc:Note>Order "1042" shipped; status online = yes. Payment &lt; 30 days &amp; no "script" needed.</cbc:Note>
  <cbc:DocumentCurrencyCode>EUR</cbc:DocumentCurrencyCode>
  <cbc:BuyerReference>04011000-12345-34</cbc:BuyerReference>
  <cac:AdditionalDocumentReference>
    <cbc:ID>INV-2026-1042.pdf</cbc:ID>
    <cac:Attachment>
      <cbc:EmbeddedDocumentBinaryObject mimeCode="application/pdf" filename="INV-2026-1042.pdf">{pdf}</cbc:EmbeddedDocumentBinaryObject>
      <cac:ExternalReference><cbc:URI>https://portal.example.com/invoices/1042?format=pdf&amp;lang=de</cbc:URI></cac:ExternalReference>
    </cac:Attachment>
  </cac:AdditionalDocumentReference>
  <cac:AccountingSupplierParty><cac:Party>
    <cbc:EndpointID schemeID="EM">billing@seller.example</cbc:EndpointID>
    <cac:PostalAddress><cbc:StreetName>Hauptstra&#223;e 1</cbc:StreetName><cbc:CityName>Berlin</cbc:CityName>
      <cbc:PostalZone>10115</cbc:PostalZone><cac:Country><cbc:IdentificationCode>DE</cbc:IdentificationCode></cac:Country></cac:PostalAddress>
    <cac:PartyLegalEntity><cbc:RegistrationName>Seller GmbH</cbc:RegistrationName></cac:PartyLegalEntity>
  </cac:Party></cac:AccountingSupplierParty>
  <cac:AccountingCustomerParty><cac:Party>
    <cbc:EndpointID schemeID="EM">ap@buyer.example</cbc:EndpointID>
    <cac:PartyLegalEntity><cbc:RegistrationName>Buyer AG</cbc:RegistrationName></cac:PartyLegalEntity>
  </cac:Party></cac:AccountingCustomerParty>
  <cac:PaymentMeans><cbc:PaymentMeansCode>58</cbc:PaymentMeansCode>
    <cac:PayeeFinancialAccount><cbc:ID>DE02120300000000202051</cbc:ID></cac:PayeeFinancialAccount></cac:PaymentMeans>
  <cac:TaxTotal><cbc:TaxAmount currencyID="EUR">19.00</cbc:TaxAmount></cac:TaxTotal>
  <cac:LegalMonetaryTotal>
    <cbc:LineExtensionAmount currencyID="EUR">100.00</cbc:LineExtensionAmount>
    <cbc:TaxExclusiveAmount currencyID="EUR">100.00</cbc:TaxExclusiveAmount>
    <cbc:TaxInclusiveAmount currencyID="EUR">119.00</cbc:TaxInclusiveAmount>
    <cbc:PayableAmount currencyID="EUR">119.00</cbc:PayableAmount>
  </cac:LegalMonetaryTotal>
  <cac:InvoiceLine><cbc:ID>1</cbc:ID><cbc:InvoicedQuantity unitCode="H87">2</cbc:InvoicedQuantity>
    <cbc:LineExtensionAmount currencyID="EUR">100.00</cbc:LineExtensionAmount>
    <cac:Item><cbc:Name>Widget "Online"</cbc:Name></cac:Item>
    <cac:Price><cbc:PriceAmount currencyID="EUR">50.00</cbc:PriceAmount></cac:Price></cac:InvoiceLine>
</Invoice>
""".encode()


def xrechnung() -> bytes:
    """An XRechnung (the German CIUS of EN 16931) in its UBL syntax."""
    return ubl_invoice("urn:cen.eu:en16931:2017#compliant#urn:xeinkauf.de:kosit:xrechnung_3.0")


def factur_x() -> bytes:
    """The XML of a Factur-X / ZUGFeRD invoice (UN/CEFACT Cross Industry Invoice)."""
    return b"""<?xml version='1.0' encoding='UTF-8'?>
<rsm:CrossIndustryInvoice xmlns:qdt="urn:un:unece:uncefact:data:standard:QualifiedDataType:100"
  xmlns:ram="urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100"
  xmlns:rsm="urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100"
  xmlns:udt="urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <rsm:ExchangedDocumentContext>
    <ram:GuidelineSpecifiedDocumentContextParameter><ram:ID>urn:cen.eu:en16931:2017#conformant#urn:factur-x.eu:1p0:extended</ram:ID>
    </ram:GuidelineSpecifiedDocumentContextParameter>
  </rsm:ExchangedDocumentContext>
  <rsm:ExchangedDocument><ram:ID>FX-2026-77</ram:ID><ram:TypeCode>380</ram:TypeCode>
    <ram:IssueDateTime><udt:DateTimeString format="102">20261123</udt:DateTimeString></ram:IssueDateTime>
    <ram:IncludedNote><ram:Content>Livraison "en ligne" ; statut online = oui</ram:Content></ram:IncludedNote>
  </rsm:ExchangedDocument>
  <rsm:SupplyChainTradeTransaction>
    <ram:ApplicableHeaderTradeSettlement><ram:InvoiceCurrencyCode>EUR</ram:InvoiceCurrencyCode>
      <ram:SpecifiedTradeSettlementHeaderMonetarySummation>
        <ram:GrandTotalAmount>119.00</ram:GrandTotalAmount><ram:DuePayableAmount>119.00</ram:DuePayableAmount>
      </ram:SpecifiedTradeSettlementHeaderMonetarySummation>
    </ram:ApplicableHeaderTradeSettlement>
  </rsm:SupplyChainTradeTransaction>
</rsm:CrossIndustryInvoice>
"""


# --- hostile: each ran in headless Chromium (file:// or in an iframe) -------------------------

KEYFRAMES = "<style>@keyframes x{from{color:red}to{color:blue}}</style>"
MARK = "document.documentElement.setAttribute('data-pwned','1');document.title='PWNED'"


def webkit_animation() -> bytes:
    """An unlisted handler after a quoted ">", fired by a CSS animation: no click needed."""
    return (f'<html><head>{KEYFRAMES}</head><body><div title=">" style="animation:x 0.1s" '
            f'onwebkitanimationstart="{MARK}">hi</div></body></html>').encode()


def content_visibility() -> bytes:
    return (f'<html><body><div title=">" style="display:block;content-visibility:auto" '
            f'oncontentvisibilityautostatechange="{MARK}">hi</div></body></html>').encode()


def entity_namespace_xml() -> bytes:
    """The XHTML namespace assembled from a DTD entity: a script element in an .xml file."""
    return (f'<?xml version="1.0"?>\n<!DOCTYPE doc [<!ENTITY w "http://www.w3.org/1999/">]>\n'
            f'<doc><p>Report</p><script xmlns="&w;xhtml">{MARK}</script></doc>').encode()


def svg_in_data_url(element: str = "iframe") -> bytes:
    """An SVG with script in a data: URL: an iframe, embed or object runs it (in an opaque origin)."""
    svg = f'<svg xmlns="{SVG_NS}"><script>console.log("PWNED in " + location.protocol)</script></svg>'
    attr = "data" if element == "object" else "src"
    return f'<html><body><{element} {attr}="data:image/svg+xml;base64,{b64(svg)}"></{element}></body></html>'.encode()


def attlist_handler_svg() -> bytes:
    """An onload handler that is nowhere in the markup: the DTD gives it to every svg element."""
    return (f'<?xml version="1.0"?>\n<!DOCTYPE svg [<!ATTLIST svg onload CDATA #FIXED "{MARK}">]>\n'
            f'<svg xmlns="{SVG_NS}" width="10" height="10"><rect width="10" height="10"/></svg>').encode()


def entity_url_xml() -> bytes:
    """A javascript: URL whose scheme is an entity, in an XHTML iframe of an .xml file."""
    return (f'<?xml version="1.0"?>\n<!DOCTYPE d [<!ENTITY j "javascript:">]>\n<d><iframe xmlns="{XHTML_NS}" '
            f'src="&j;parent.document.documentElement.setAttribute(\'data-pwned\',\'1\')"/></d>').encode()


def percent(text: str) -> str:
    return urllib.parse.quote(text, safe="")
