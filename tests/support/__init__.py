"""Test support: local protocol servers and helpers shared by the suites."""
