"""Triggers: what starts runs from outside an API call. Webhook intake lives here
(``signing``: the authentication schemes; ``intake``: bodies, templates' scope, delivery
ids); the use cases that store hooks and start runs are in ``flowyard.service.hooks``.
Schedules and event triggers join this package."""
