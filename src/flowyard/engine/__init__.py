"""Engine: pure decisions. Definitions are compiled and validated here; step results are turned
into transitions (next steps, retries, run completion) without touching a database."""
