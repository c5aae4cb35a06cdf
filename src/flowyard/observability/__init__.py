"""Observability: Prometheus metrics (imports nothing else of flowyard's)."""

from __future__ import annotations

from flowyard.observability.metrics import CONTENT_TYPE_LATEST, Metrics, PoolStats

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "PoolStats"]
