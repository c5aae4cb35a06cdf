"""Stores: the port (``Store`` protocol) and the SQLite / PostgreSQL implementations."""

from flowyard.domain.commands import StepCompletion
from flowyard.store.factory import normalize_url, open_store
from flowyard.store.ports import RunState, Store

__all__ = ["RunState", "StepCompletion", "Store", "normalize_url", "open_store"]
