"""The one wall clock: every layer that needs "now" imports it from here (config is the bottom layer).

Services take a ``Clock`` so that tests can pass a fixed or stepping one; everything else
calls ``utc_now``. Always timezone-aware UTC: certificate, CRL and store times compare
against each other and against aware datetimes parsed from the store.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
