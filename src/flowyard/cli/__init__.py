"""The ``flowyard`` command line."""
