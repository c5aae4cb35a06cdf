"""The web console: the built single-page app (sources in ``console/``, ``make ui``) served
at ``/`` beside the API (decision 0033). See :mod:`flowyard.console.serve`."""

from __future__ import annotations

from flowyard.console.serve import STATIC_DIR, install

__all__ = ["STATIC_DIR", "install"]
