"""The master key of a starting process, checked against the database: a lost key file is
never silently replaced by a new key (that would make every stored credential unreadable)."""

from __future__ import annotations

from flowyard.security.keys import (
    MasterKeyError,
    create_key_file,
    key_file_path,
    master_key_candidate,
)
from flowyard.security.vault import Vault
from flowyard.settings import Settings
from flowyard.store.ports import CredentialStore

#: Credential names quoted in the refusal (the rest are counted).
_SHOWN = 5


class LostMasterKey(MasterKeyError):
    """The database holds credentials encrypted under a master key this process lacks."""

    code = "master-key-lost"
    title = "Master key not found"


async def unreadable_credentials(store: CredentialStore, vault: Vault) -> dict[str, list[str]]:
    """Names of the credentials whose key is not in ``vault``'s keyring, by key id."""
    unknown: dict[str, list[str]] = {}
    after: str | None = None
    while True:
        page = await store.list_credentials(limit=500, after=after)
        for stored in page:
            key_id = stored.record.key_id
            if key_id in unknown or not vault.can_decrypt(key_id):
                unknown.setdefault(key_id, []).append(stored.record.name)
        if len(page) < 500:
            return unknown
        after = page[-1].record.name


async def open_vault(
    settings: Settings, store: CredentialStore, *, check: bool = True
) -> tuple[bytes, Vault]:
    """The master key and vault of a process on ``store``.

    A missing key file is created only when no stored credential needs another key. With
    ``check`` (every process but the commands that let an operator give such credentials
    up), credentials under an unknown key refuse the start (:class:`LostMasterKey`); without
    it they are left unreadable and no key file is written."""
    master, to_create = master_key_candidate(settings)
    vault = Vault.from_settings(settings, master)
    unknown = await unreadable_credentials(store, vault)
    if unknown and check:
        raise LostMasterKey(_refusal(settings, unknown, to_create is not None))
    if to_create is not None and not unknown:
        written = create_key_file(to_create, master)
        if written != master:  # another process created the file first: use its key
            master = written
            vault = Vault.from_settings(settings, master)
    return master, vault


def _refusal(settings: Settings, unknown: dict[str, list[str]], file_missing: bool) -> str:
    names = sorted(n for group in unknown.values() for n in group)
    more = len(names) - _SHOWN
    shown = ", ".join(names[:_SHOWN]) + (f" and {more} more" if more > 0 else "")
    what = (
        f"the database holds {len(names)} credential{'s' if len(names) != 1 else ''} "
        f"({shown}) encrypted under a master key this process does not have (key id "
        f"{', '.join(sorted(unknown))})"
    )
    path = key_file_path(settings)
    if path is None:
        where = "FLOWYARD_SECRET_KEY is not the key they were encrypted with"
        fix = "Set FLOWYARD_SECRET_KEY to that key"
    else:
        where = (
            f"the key file {path} is missing (no new one was created)"
            if file_missing
            else f"the key file {path} holds another key"
        )
        fix = f"Restore {path} from your backup, or set FLOWYARD_SECRET_KEY to that key"
    return (
        f"{what}: {where}. {fix} (during a key rotation, the former key goes in "
        "FLOWYARD_PREVIOUS_SECRET_KEYS). If the key is lost for good, delete those credentials "
        "(flowyard credentials delete NAME) and create them again."
    )
