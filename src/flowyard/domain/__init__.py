"""Domain: definition models, statuses, ids and errors. Imports nothing else of flowyard."""
