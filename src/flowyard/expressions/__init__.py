"""Safe expression language for workflow conditions and templates.

Built on Jinja2's immutable sandbox; see :class:`ExpressionEngine`. This is a
bottom layer and imports nothing else from ``flowyard``.
"""

from __future__ import annotations

from .engine import CacheInfo, ExpressionEngine, ExpressionLimits
from .errors import ExpressionError

__all__ = ["CacheInfo", "ExpressionEngine", "ExpressionError", "ExpressionLimits"]
