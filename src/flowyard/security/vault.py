"""The vault: credential data encrypted at rest with AES-256-GCM under a keyring.

A blob is ``b"\\x01" + nonce (12 random bytes) + ciphertext-and-tag``; its associated data
binds it to one row (``flowyard:credential:v1:<id>:<type>``), so a blob copied onto another
credential, or a row whose type was changed, is refused like a flipped byte. The key of a
blob is named by the row's ``key_id``: a fingerprint of the vault key (never the key).

The keyring holds the vault key derived (HKDF, purpose ``vault``) from the current master
key, which encrypts, and keys derived from former master keys, which only decrypt:
``FLOWYARD_PREVIOUS_SECRET_KEYS`` and, in key-file mode, ``<keyfile>.old`` and
``<keyfile>.new`` when present. So a key rotation interrupted at any point leaves every row
readable. A key id not in the keyring reloads it once (another process may just have
rotated the key file) before failing with an error naming the key id.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from flowyard.domain.auth import AuditEntry
from flowyard.domain.credentials import CredentialType, StoredCredential
from flowyard.domain.errors import FlowyardError
from flowyard.security.keys import (
    MasterKeyError,
    derive_key,
    key_file_path,
    load_master_key,
    parse_key,
    read_key_file,
)
from flowyard.settings import Settings
from flowyard.store.ports import CredentialStore

FORMAT_V1 = b"\x01"
NONCE_BYTES = 12
PURPOSE = "vault"


class VaultError(FlowyardError):
    """A credential cannot be decrypted: unknown key id, tampered or moved ciphertext."""

    code = "vault"
    title = "Credential unreadable"


def key_id_of(key: bytes) -> str:
    """The public name of a vault key: 16 hex digits of a SHA-256 over it."""
    return hashlib.sha256(b"flowyard:vault-key-id:" + key).hexdigest()[:16]


def vault_key(master: bytes) -> bytes:
    """The vault key of a master key."""
    return derive_key(master, PURPOSE)


def associated_data(cred_id: str, type_: CredentialType | str) -> bytes:
    """What a blob is bound to: its row's id and type."""
    kind = type_.value if isinstance(type_, CredentialType) else type_
    return f"flowyard:credential:v1:{cred_id}:{kind}".encode()


def sidecar_paths(key_file: Path) -> tuple[Path, Path]:
    """``(<keyfile>.old, <keyfile>.new)``, the files of a key rotation."""
    return key_file.with_name(key_file.name + ".old"), key_file.with_name(key_file.name + ".new")


def former_master_keys(settings: Settings) -> list[bytes]:
    """Master keys that only decrypt: ``previous_secret_keys`` and, in key-file mode, the
    rotation's ``.old`` and ``.new`` files."""
    keys: list[bytes] = []
    if settings.previous_secret_keys is not None:
        raw = settings.previous_secret_keys.get_secret_value()
        for n, part in enumerate(p for p in raw.split(",") if p.strip()):
            keys.append(parse_key(part, f"FLOWYARD_PREVIOUS_SECRET_KEYS (key {n + 1})"))
    path = key_file_path(settings)
    if path is not None:
        keys.extend(read_key_file(side) for side in sidecar_paths(path) if side.exists())
    return keys


@dataclass(frozen=True, slots=True)
class Rotation:
    """Outcome of a key rotation."""

    key_id: str
    reencrypted: int


class Vault:
    """Encrypts and decrypts credential data under a keyring of vault keys."""

    def __init__(
        self,
        current: bytes,
        previous: list[bytes] | None = None,
        *,
        reload: Callable[[], list[bytes]] | None = None,
    ) -> None:
        """``current`` and ``previous`` are vault keys (see :func:`vault_key`); ``reload``
        returns extra vault keys when an unknown key id is met."""
        self._lock = threading.Lock()
        self._keys: dict[str, bytes] = {}
        for key in previous or []:
            self._add(key)
        self._current_id = self._add(current)
        self._reload = reload

    @classmethod
    def from_settings(cls, settings: Settings, master: bytes | None = None) -> Vault:
        """The vault of a process: the current master key (loaded unless given) and the
        former ones; the key-file sidecars are re-read when an unknown key id is met."""
        master = master if master is not None else load_master_key(settings)

        def reload() -> list[bytes]:
            try:
                return [vault_key(k) for k in former_master_keys(settings)]
            except (OSError, MasterKeyError):
                return []

        previous = [vault_key(k) for k in former_master_keys(settings)]
        return cls(vault_key(master), previous, reload=reload)

    def _add(self, key: bytes) -> str:
        if len(key) != 32:
            raise ValueError("vault keys are 32 bytes")
        key_id = key_id_of(key)
        with self._lock:
            self._keys[key_id] = key
        return key_id

    @property
    def key_id(self) -> str:
        """The id of the key new data is encrypted with."""
        return self._current_id

    @property
    def key_ids(self) -> list[str]:
        """Ids of every key that can decrypt (current first)."""
        with self._lock:
            return [self._current_id, *sorted(k for k in self._keys if k != self._current_id)]

    def _key(self, key_id: str) -> bytes:
        with self._lock:
            key = self._keys.get(key_id)
        if key is None and self._reload is not None:
            for extra in self._reload():
                self._add(extra)
            with self._lock:
                key = self._keys.get(key_id)
        if key is None:
            raise VaultError(
                f"no vault key with id {key_id!r} in the keyring (known: "
                f"{', '.join(self.key_ids)}); give the master key it was made with in "
                "FLOWYARD_PREVIOUS_SECRET_KEYS",
                detail={"key_id": key_id},
            )
        return key

    def can_decrypt(self, key_id: str) -> bool:
        """Whether the keyring holds the key ``key_id`` (reloading it once, like a read)."""
        try:
            self._key(key_id)
        except VaultError:
            return False
        return True

    def encrypt(
        self,
        cred_id: str,
        type_: CredentialType,
        data: Mapping[str, Any],
        *,
        key_id: str | None = None,
    ) -> tuple[bytes, str]:
        """``(blob, key_id)`` of ``data`` for the row ``cred_id`` of type ``type_``, under the
        current key (or ``key_id``)."""
        key_id = key_id or self._current_id
        nonce = os.urandom(NONCE_BYTES)
        plaintext = json.dumps(dict(data), separators=(",", ":"), sort_keys=True).encode()
        sealed = AESGCM(self._key(key_id)).encrypt(
            nonce, plaintext, associated_data(cred_id, type_)
        )
        return FORMAT_V1 + nonce + sealed, key_id

    def decrypt(
        self, cred_id: str, type_: CredentialType, blob: bytes, key_id: str
    ) -> dict[str, Any]:
        """The data of a blob (VaultError when it is unknown, tampered or not this row's)."""
        key = self._key(key_id)
        if blob[:1] != FORMAT_V1 or len(blob) < 1 + NONCE_BYTES + 16:
            raise VaultError(f"credential {cred_id!r}: unknown ciphertext format")
        nonce, sealed = blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]
        try:
            plaintext = AESGCM(key).decrypt(nonce, sealed, associated_data(cred_id, type_))
        except InvalidTag:
            raise VaultError(
                f"credential {cred_id!r} failed authentication: its ciphertext was altered or "
                "belongs to another row",
                detail={"key_id": key_id},
            ) from None
        data: dict[str, Any] = json.loads(plaintext)
        return data

    def open(self, stored: StoredCredential) -> dict[str, Any]:
        """The data of a stored credential."""
        r = stored.record
        return self.decrypt(r.id, r.type, stored.ciphertext, r.key_id)

    async def rotate(
        self, store: CredentialStore, new_master: bytes, *, audit: AuditEntry | None = None
    ) -> Rotation:
        """Re-encrypt every credential not under ``new_master``'s vault key, in one
        transaction (all or nothing); afterwards that key is this vault's current key."""
        new_id = self._add(vault_key(new_master))

        def reencrypt(stored: StoredCredential) -> tuple[bytes, str] | None:
            r = stored.record
            if r.key_id == new_id:
                return None
            return self.encrypt(r.id, r.type, self.open(stored), key_id=new_id)

        count = await store.reencrypt_credentials(reencrypt, audit=audit)
        self._current_id = new_id
        return Rotation(new_id, count)
