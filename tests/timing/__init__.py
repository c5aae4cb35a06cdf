"""Timing tests under a fake clock."""
