"""Observability: Prometheus metrics (imports nothing else of flowyard's)."""

from __future__ import annotations

from flowyard.observability.metrics import TEXT_CONTENT_TYPE, Metrics, PoolStats, QueueHealth

__all__ = ["TEXT_CONTENT_TYPE", "Metrics", "PoolStats", "QueueHealth"]
