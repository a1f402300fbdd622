"""Helpers the tests share. Test modules import them from here (`from tests.support.net import
free_port`): conftest.py holds fixtures only, no test module imports another, and nothing here
imports a test module.

env       the checkout and the tools a test needs: ROOT, CORPORA, missing(), chrome()
net       loopback: free ports, waiting for a port, RawSession, self-signed certificates
proc      the proxy as a process (Proxy), its config file, the downstream Sink, moto's S3 server
http      plain HTTP GETs (fetch, get)
scrape    the proxy's /metrics, parsed
relayed   reading what the proxy relayed: bodies, attachments, decision headers
decoys    HTML documents with decoy <body> text, for where the notice goes
keys      DKIM key pairs
samples   small real files built in memory
mail      MIME builders (the harness's)
markup    benign and hostile HTML/XML/SVG documents
scripted  a scripted downstream SMTP server
dnsstub   a DNS server answering TXT queries from a dict
faulty    a downstream that misbehaves on the wire
postfix   a private Postfix instance as the sending MTA
"""
