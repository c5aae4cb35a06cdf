"""The SQL store on SQLAlchemy Core: one code path for SQLite and PostgreSQL, assembled
from one mixin per role over :class:`~flowyard.store.base.SqlBase`; the dialect subclasses
stay small."""

from __future__ import annotations

from flowyard.store.auth import AuthOps
from flowyard.store.campaign_changes import CampaignChangeOps
from flowyard.store.changes import ChangeOps
from flowyard.store.credentials import CredentialOps
from flowyard.store.drafts import DraftOps
from flowyard.store.hooks import HookOps
from flowyard.store.lifecycle import LifecycleOps
from flowyard.store.logins import LoginOps
from flowyard.store.queue import QueueOps
from flowyard.store.quotas import QuotaOps
from flowyard.store.retention import RetentionOps
from flowyard.store.run_stats import RunStatsOps
from flowyard.store.runs import RunOps
from flowyard.store.schedules import ScheduleOps
from flowyard.store.signals import SignalOps
from flowyard.store.triggers import TriggerOps
from flowyard.store.workflows import WorkflowOps


class SqlStore(
    ChangeOps,
    WorkflowOps,
    DraftOps,
    ScheduleOps,
    RunOps,
    RunStatsOps,
    QueueOps,
    LifecycleOps,
    SignalOps,
    AuthOps,
    LoginOps,
    CredentialOps,
    QuotaOps,
    HookOps,
    CampaignChangeOps,
    TriggerOps,
    RetentionOps,
):
    """Every port of :class:`~flowyard.store.ports.Store`: workflows, runs and events, the
    queue, run lifecycle, signals and moves, users and sessions, logins, credentials,
    provider quotas, webhook triggers, drafts, campaigns, event triggers, schedules,
    retention, and the notifications between processes."""
