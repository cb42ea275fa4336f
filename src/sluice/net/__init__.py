"""Transports: gRPC over HTTP/2 on python-hyper's `h2` with explicit limits, and one strict
HTTP/1.1 response reader (on `httptools`). Imports nothing of ours."""
