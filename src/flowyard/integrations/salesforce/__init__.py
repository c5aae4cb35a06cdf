"""Salesforce: the ``salesforce`` node type (REST sObjects and SOQL) and the
``salesforce_oauth`` authenticator (OAuth 2.0 refresh-token, client-credentials and JWT
bearer flows, one cached token per credential)."""

from __future__ import annotations

from .auth import SalesforceAuth
from .node import SalesforceNode

__all__ = ["SalesforceAuth", "SalesforceNode"]
