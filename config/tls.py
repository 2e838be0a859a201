"""TLS settings shared by every listener (the SCEP server and the operator console)."""

from __future__ import annotations

import ssl

# TLS 1.2 cipher suites: forward-secret AEAD only (RFC 9325 section 4.2). OpenSSL's default
# list still offers CBC suites (Lucky13-style padding oracles, MAC-then-encrypt); TLS 1.3's
# suites are all AEAD and are set apart from this list, so they stay as they are.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def harden(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """TLS 1.2 at least, and only the AEAD suites above for TLS 1.2."""
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    return ctx
