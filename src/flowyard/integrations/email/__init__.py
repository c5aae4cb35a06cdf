"""The ``email`` node type: one message through an SMTP relay (``smtp`` credential,
aiosmtplib) or SendGrid's v3 mail/send (``sendgrid`` credential).

- :mod:`.message`: the rendered fields checked (addresses, headers, size) and the MIME message;
- :mod:`.smtp`: the SMTP transport (origins, egress, TLS, AUTH, reply classification);
- :mod:`.sendgrid`: the SendGrid transport and its authenticator;
- :mod:`.node`: the config and output models and the node type.
"""

from __future__ import annotations

from flowyard.integrations.email.node import EmailConfig, EmailNode, EmailOutput

__all__ = ["EmailConfig", "EmailNode", "EmailOutput"]
