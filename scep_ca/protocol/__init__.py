"""SCEP protocol core (RFC 8894): pkiMessage decoding and verification, CMS envelopes, CertRep
building, CSR policy and subject templates, enums and the failInfo-carrying errors. Pure and
synchronous: no I/O, no aiohttp, no store. ``client`` is the client side of the same
messages (a public API used by the tests, the benchmarks and the vector scripts)."""
