"""Security: the master key and its sub-keys, passwords, tokens, API keys, principals and
the credentials vault."""

from flowyard.security.auth import AuthService
from flowyard.security.credentials import CredentialResolver, CredentialService, CredentialView
from flowyard.security.keys import MasterKeyError, derive_key, load_master_key
from flowyard.security.principals import AccessRevoked, AuthError, NewApiKey, Principal, TokenPair
from flowyard.security.throttle import LoginThrottled, ThrottlePolicy
from flowyard.security.vault import Rotation, Vault, VaultError

__all__ = [
    "AccessRevoked",
    "AuthError",
    "AuthService",
    "CredentialResolver",
    "CredentialService",
    "CredentialView",
    "LoginThrottled",
    "MasterKeyError",
    "NewApiKey",
    "Principal",
    "Rotation",
    "ThrottlePolicy",
    "TokenPair",
    "Vault",
    "VaultError",
    "derive_key",
    "load_master_key",
]
