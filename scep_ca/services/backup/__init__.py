"""Backup and restore (issue 19): ``service`` is the API."""
