"""The customers' direct upload portal (issue 14): sessions, pages, resumable uploads, delivery."""
