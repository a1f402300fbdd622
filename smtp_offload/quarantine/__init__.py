"""The quarantine: spoofed or blocked files the proxy stripped, kept where an administrator can
release them (policy.quarantine). records holds and reads them (the delivery pipeline imports
it, so it imports nothing of delivery); service releases, deletes and purges; command and web
are its command line and its HTTP API."""
