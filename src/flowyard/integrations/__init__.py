"""Provider integrations: node types that talk to Salesforce, email (SMTP, SendGrid), Twilio
(SMS, WhatsApp), Meta Graph (Instagram), Slack, and offline sentiment analysis.

They are a node pack like any third-party one: the ``flowyard.nodes`` entry point
``integrations`` names :func:`register`, which registers :data:`INTEGRATION_TYPES`. Each type
declares its config and output models, the credential types it takes, its error types, and
the authenticators its credentials need (``NodeType.authenticators``). They reach providers
through the outbound layer (credential origins, the egress policy) and
:mod:`flowyard.nodes.httpio` (one deadline, bounded bodies).
"""

from __future__ import annotations

from typing import Any

from flowyard.integrations.email import EmailNode
from flowyard.integrations.meta import InstagramNode
from flowyard.integrations.salesforce import SalesforceNode
from flowyard.integrations.sentiment import SentimentNode
from flowyard.integrations.slack import SlackNode
from flowyard.integrations.twilio import SmsNode, WhatsAppNode
from flowyard.nodes.base import NodeType

#: The provider node types of this pack (each slice of issue 11 adds its own).
INTEGRATION_TYPES: tuple[type[NodeType[Any]], ...] = (
    SalesforceNode,
    EmailNode,
    SmsNode,
    WhatsAppNode,
    SlackNode,
    InstagramNode,
    SentimentNode,
)


def register(registry: Any) -> None:
    """Entry point of the pack: register every provider node type."""
    for node_type in INTEGRATION_TYPES:
        registry.register(node_type)
