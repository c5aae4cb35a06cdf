"""Security: the master key and its sub-keys, passwords, tokens, API keys and principals."""

from flowyard.security.auth import AuthError, AuthService, Principal, TokenPair
from flowyard.security.keys import MasterKeyError, derive_key, load_master_key

__all__ = [
    "AuthError",
    "AuthService",
    "MasterKeyError",
    "Principal",
    "TokenPair",
    "derive_key",
    "load_master_key",
]
