"""Application services: enrollment decisions, the SCEP service (the one place where protocol
errors become failInfo), revocation. Async, talk to the store through its protocols; no HTTP."""
