"""The admin listener (``listener``: probes, metrics, connection limits) and the ``/v1`` admin
API mounted on it (``api``: routes, bearer-token guard, handlers, problem answers).
"""

from __future__ import annotations

from hookrelay.ops.admin.api import (
    API_PREFIX,
    DELIVERY_OUTCOMES,
    DISABLED_DETAIL,
    MAX_REQUEST_BYTES,
    AdminApi,
    AdminBackend,
    openapi_document,
)
from hookrelay.ops.admin.listener import (
    IDLE_TIMEOUT_S,
    MAX_CONNECTIONS,
    AdminServer,
    ReadinessCheck,
)

__all__ = [
    "API_PREFIX",
    "DELIVERY_OUTCOMES",
    "DISABLED_DETAIL",
    "IDLE_TIMEOUT_S",
    "MAX_CONNECTIONS",
    "MAX_REQUEST_BYTES",
    "AdminApi",
    "AdminBackend",
    "AdminServer",
    "ReadinessCheck",
    "openapi_document",
]
