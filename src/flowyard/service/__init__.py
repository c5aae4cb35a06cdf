"""Application service: the use cases shared by the API and the CLI. Routes and commands
stay thin on top of it.

``FlowyardService`` is one object assembled from a use-case mixin per concept, each over
:class:`~flowyard.service.base.ServiceBase` (the store, validator, cache and clock):
workflows, runs, lifecycle (operator actions, over runs), state machines and runs addressed
by correlation key (over lifecycle and state machines), campaigns (over lifecycle).
:class:`~flowyard.service.admin.AdminService` holds the operators' reads (readiness, queue
depth, the audit log)."""

from __future__ import annotations

from flowyard.service.admin import AdminService
from flowyard.service.base import COMPILE_CONCURRENCY, COMPILE_WAIT_S
from flowyard.service.campaign_changes import CampaignChanged, CampaignChangeUseCases
from flowyard.service.campaigns import CampaignAction, LimitsSpec
from flowyard.service.correlation import CorrelationUseCases
from flowyard.service.drafts import DraftView
from flowyard.service.graphs import GraphUseCases
from flowyard.service.lifecycle import BulkRetry
from flowyard.service.machines import ActionsView
from flowyard.service.runs import (
    MAX_RUN_PAYLOAD_BYTES,
    MAX_SUBWORKFLOW_DEPTH,
    RunDetail,
    check_run_payload,
    run_deadline,
)


class FlowyardService(GraphUseCases, CorrelationUseCases, CampaignChangeUseCases):
    """Use cases over a store, a validator and the compiled-workflow cache (workflows bring
    their drafts and graphs; correlation brings lifecycle, runs and state machines with it;
    campaigns start runs in bulk, and are steered while they drain)."""


__all__ = [
    "COMPILE_CONCURRENCY",
    "COMPILE_WAIT_S",
    "MAX_RUN_PAYLOAD_BYTES",
    "MAX_SUBWORKFLOW_DEPTH",
    "ActionsView",
    "AdminService",
    "BulkRetry",
    "CampaignAction",
    "CampaignChanged",
    "DraftView",
    "FlowyardService",
    "LimitsSpec",
    "RunDetail",
    "check_run_payload",
    "run_deadline",
]
