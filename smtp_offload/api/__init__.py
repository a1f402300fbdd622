"""The HTTP API that contact-center flows call: inspect and upload files, async jobs (issue 13)."""
