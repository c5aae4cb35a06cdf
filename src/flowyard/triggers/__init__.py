"""Triggers: what starts runs from outside an API call. Webhook intake lives here
(``signing``: the authentication schemes; ``intake``: bodies, templates' scope, delivery
ids); the use cases that store hooks and start runs are in ``flowyard.service.hooks``.
Schedules (``schedules``: cron and interval timetables, the tick arithmetic and the
scheduler loop) live here too; their use cases are in ``flowyard.service.schedules``.
Event triggers join this package."""
