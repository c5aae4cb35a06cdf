"""Triggers: what starts runs from outside the API's run start (schedules, webhooks)."""
