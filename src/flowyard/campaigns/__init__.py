"""The pure parts of campaigns: reading items from a JSON array, NDJSON or CSV, one at a
time, and rendering each item's key. No database, no web framework."""
