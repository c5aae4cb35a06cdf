"""Outbound requests: where credentials may go (origins), how they are attached (at send
time, per hop), and where requests may connect at all (the egress policy).

A layer between ``nodes`` (and provider integrations) and the store: it imports only the
domain, the settings and httpx/httpcore.
"""

from __future__ import annotations

from flowyard.domain.egress import EgressPolicyKind
from flowyard.outbound.auth import (
    AuthContext,
    Authenticator,
    Authenticators,
    OriginNotAllowed,
    check_origin,
)
from flowyard.outbound.egress import (
    EgressDenied,
    EgressPolicy,
    GuardedClient,
    allowed_addresses,
    guarded_client,
    policy_of,
)
from flowyard.outbound.origins import (
    HTTP_STYLE,
    Origin,
    OriginError,
    OriginListError,
    normalize_origins,
    origin_of,
    parse_origin,
    provider_origins,
    same_origin,
)
from flowyard.outbound.send import Outbound

__all__ = [
    "HTTP_STYLE",
    "AuthContext",
    "Authenticator",
    "Authenticators",
    "EgressDenied",
    "EgressPolicy",
    "EgressPolicyKind",
    "GuardedClient",
    "Origin",
    "OriginError",
    "OriginListError",
    "OriginNotAllowed",
    "Outbound",
    "allowed_addresses",
    "check_origin",
    "guarded_client",
    "normalize_origins",
    "origin_of",
    "parse_origin",
    "policy_of",
    "provider_origins",
    "same_origin",
]
