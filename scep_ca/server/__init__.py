"""The aiohttp server: app wiring, thin handlers, health probes, metrics, logging and the
worker supervisor."""
