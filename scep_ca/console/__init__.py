"""The operator web console: server-rendered pages over the services (issue 20, README "Console").

Its own layer beside ``scep_ca.server``: it uses the services, the store and the PKI layer,
nothing below imports it, and ``scep-ca serve`` (the CLI) starts it on ``console.listen``.
"""
