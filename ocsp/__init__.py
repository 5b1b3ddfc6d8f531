"""The OCSP responder (RFC 6960, RFC 5019 profile): a stack of small sources behind one handler.

See ocsp/README.md for the design, the commands and the settings.
"""
