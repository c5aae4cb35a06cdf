"""The store's ports: one ``Protocol`` per role, and :class:`Store`, their union.

Consumers type against the narrowest port they use: workers the :class:`QueueStore` (and
the :class:`QuotaStore`), the login throttle the :class:`LoginStore`, live streams the
:class:`EventFeed`, the vault the :class:`CredentialStore`. The SQL stores (``SqliteStore``,
``PostgresStore``) implement the whole :class:`Store`; ``tests/contract`` checks every method
of every port against both. Outside ``store/``, only this package of the store may be imported
(``lint-imports``)."""

from __future__ import annotations

from typing import Protocol

from flowyard.domain.commands import StepCompletion
from flowyard.store.ports.admin import AdminStore
from flowyard.store.ports.audit import AuditStore
from flowyard.store.ports.auth import AuthStore, LoginStore
from flowyard.store.ports.campaigns import CampaignStore
from flowyard.store.ports.changes import ChangeFeed
from flowyard.store.ports.credentials import CredentialStore
from flowyard.store.ports.drafts import DraftStore
from flowyard.store.ports.events import EventFeed, EventListener
from flowyard.store.ports.hooks import HookStore
from flowyard.store.ports.lifecycle import LifecycleStore
from flowyard.store.ports.queue import (
    Claimed,
    ClaimRequest,
    CompletionResult,
    QueueStore,
    RunState,
)
from flowyard.store.ports.quotas import QuotaStore
from flowyard.store.ports.retention import RetentionStore
from flowyard.store.ports.runs import RunStore
from flowyard.store.ports.schedules import ScheduleStore
from flowyard.store.ports.triggers import TriggerStore
from flowyard.store.ports.workflows import WorkflowStore


class Store(
    AdminStore,
    WorkflowStore,
    DraftStore,
    RunStore,
    EventFeed,
    ChangeFeed,
    QueueStore,
    LifecycleStore,
    AuthStore,
    AuditStore,
    CredentialStore,
    QuotaStore,
    HookStore,
    CampaignStore,
    TriggerStore,
    ScheduleStore,
    RetentionStore,
    Protocol,
):
    """Every port at once: what a SQL store implements (``SqliteStore``, ``PostgresStore``)."""


__all__ = [
    "AdminStore",
    "AuditStore",
    "AuthStore",
    "CampaignStore",
    "ChangeFeed",
    "ClaimRequest",
    "Claimed",
    "CompletionResult",
    "CredentialStore",
    "DraftStore",
    "EventFeed",
    "EventListener",
    "HookStore",
    "LifecycleStore",
    "LoginStore",
    "QueueStore",
    "QuotaStore",
    "RetentionStore",
    "RunState",
    "RunStore",
    "ScheduleStore",
    "StepCompletion",
    "Store",
    "TriggerStore",
    "WorkflowStore",
]
