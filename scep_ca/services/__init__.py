"""Application services: enrollment decisions, the SCEP service (the one place where protocol
errors become failInfo), revocation. Async, talk to the store through its protocols. They serve
no HTTP (the aiohttp handlers are in ``scep_ca.server``); only the validators call out, through
``validators/http.py``."""
