"""``GET /metrics``: the Prometheus text format 0.0.4. Without a token for clients on loopback
by default; see ``Settings.metrics_access`` and the rule in :data:`flowyard.api.security.RULES`."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response

from flowyard.api.deps import ContainerDep
from flowyard.api.jsonbody import StrictJSONRoute
from flowyard.domain.errors import StoreUnavailable
from flowyard.observability import TEXT_CONTENT_TYPE

router = APIRouter(tags=["system"], route_class=StrictJSONRoute)
_log = logging.getLogger("flowyard.api")


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {TEXT_CONTENT_TYPE: {}}, "description": "Prometheus text"}},
)
async def metrics(container: ContainerDep) -> Response:
    """Process metrics in the Prometheus text exposition format 0.0.4. The queue-depth gauge
    is counted in the database at most once per ``metrics_queue_depth_ttl_s``. Labels name
    workflows: clients not on loopback need a viewer token (``FLOWYARD_METRICS_ACCESS``)."""
    try:
        await container.metrics.refresh_queue_depth(
            container.admin.queue_health, max_age_s=container.settings.metrics_queue_depth_ttl_s
        )
    except StoreUnavailable as exc:
        _log.warning("queue depth not refreshed: %s", exc)
    return Response(container.metrics.render(), media_type=TEXT_CONTENT_TYPE)
