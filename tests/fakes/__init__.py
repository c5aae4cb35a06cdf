"""Local servers speaking providers' wire protocols, for the integration tests."""
