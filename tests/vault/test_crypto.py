"""The vault's cryptography without a database: AES-256-GCM round trips, tamper detection,
blobs bound to their row, the keyring, masks and redaction."""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import secrets
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from flowyard.domain.commands import Transition
from flowyard.domain.credentials import (
    MASK,
    REDACTED,
    CredentialType,
    ResolvedCredential,
    mask,
    parse_data,
    redact,
    redact_result,
)
from flowyard.domain.errors import ErrorInfo, InvalidInput
from flowyard.domain.statuses import StepStatus
from flowyard.security.keys import write_key_file
from flowyard.security.vault import Vault, VaultError, key_id_of, vault_key
from flowyard.settings import Settings

DATA = {"username": "svc", "password": "pa55-w0rd-sekrit"}


def new_vault(*previous: bytes) -> tuple[Vault, bytes]:
    master = secrets.token_bytes(32)
    return Vault(vault_key(master), [vault_key(p) for p in previous]), master


def test_round_trip_and_a_fresh_nonce_each_time() -> None:
    vault, _ = new_vault()
    blob, key_id = vault.encrypt("cred_1", CredentialType.BASIC, DATA)
    again, _ = vault.encrypt("cred_1", CredentialType.BASIC, DATA)
    assert blob != again  # random nonce
    assert blob[:1] == b"\x01"
    assert b"pa55" not in blob and b"svc" not in blob
    assert key_id == vault.key_id
    assert vault.decrypt("cred_1", CredentialType.BASIC, blob, key_id) == DATA


def test_key_id_is_a_fingerprint_not_the_key() -> None:
    vault, master = new_vault()
    key = vault_key(master)
    assert vault.key_id == key_id_of(key)
    assert len(vault.key_id) == 16
    assert vault.key_id not in key.hex() and vault.key_id not in master.hex()


@pytest.mark.parametrize("index", [0, 5, 20, -1])
def test_a_flipped_byte_is_refused(index: int) -> None:
    vault, _ = new_vault()
    blob, key_id = vault.encrypt("cred_1", CredentialType.BASIC, DATA)
    tampered = bytearray(blob)
    tampered[index] ^= 0x01
    with pytest.raises(VaultError):
        vault.decrypt("cred_1", CredentialType.BASIC, bytes(tampered), key_id)


def test_ciphertext_is_bound_to_its_row_id_and_type() -> None:
    vault, _ = new_vault()
    blob, key_id = vault.encrypt("cred_1", CredentialType.BASIC, DATA)
    with pytest.raises(VaultError, match="another row"):
        vault.decrypt("cred_2", CredentialType.BASIC, blob, key_id)
    with pytest.raises(VaultError):
        vault.decrypt("cred_1", CredentialType.CUSTOM, blob, key_id)


def test_unknown_key_id_names_the_key() -> None:
    vault, _ = new_vault()
    other, _ = new_vault()
    blob, key_id = other.encrypt("cred_1", CredentialType.BASIC, DATA)
    with pytest.raises(VaultError) as info:
        vault.decrypt("cred_1", CredentialType.BASIC, blob, key_id)
    assert key_id in info.value.message
    assert "FLOWYARD_PREVIOUS_SECRET_KEYS" in info.value.message


def test_previous_keys_decrypt_and_the_current_one_encrypts() -> None:
    old, old_master = new_vault()
    blob, old_id = old.encrypt("cred_1", CredentialType.BASIC, DATA)
    vault, _ = new_vault(old_master)
    assert vault.decrypt("cred_1", CredentialType.BASIC, blob, old_id) == DATA
    assert vault.encrypt("cred_1", CredentialType.BASIC, DATA)[1] != old_id
    assert vault.key_ids[0] == vault.key_id and old_id in vault.key_ids


def test_keyring_from_settings_reads_previous_keys_and_sidecar_files(tmp_path: Path) -> None:
    previous = secrets.token_bytes(32)
    in_new_file = secrets.token_bytes(32)
    key_file = tmp_path / "flowyard.key"
    write_key_file(key_file, secrets.token_bytes(32))
    write_key_file(tmp_path / "flowyard.key.new", in_new_file)
    settings = Settings(
        db_url=f"sqlite:///{tmp_path / 'x.db'}",
        secret_key=None,
        key_file=str(key_file),
        previous_secret_keys=previous.hex() + ", ",
    )
    vault = Vault.from_settings(settings)
    assert key_id_of(vault_key(previous)) in vault.key_ids
    assert key_id_of(vault_key(in_new_file)) in vault.key_ids
    assert len(vault.key_ids) == 3


def test_a_key_file_appearing_later_is_picked_up(tmp_path: Path) -> None:
    """A worker started before a rotation still reads rows re-encrypted by it."""
    key_file = tmp_path / "flowyard.key"
    write_key_file(key_file, secrets.token_bytes(32))
    settings = Settings(db_url="sqlite://", secret_key=None, key_file=str(key_file))
    vault = Vault.from_settings(settings)
    new_master = secrets.token_bytes(32)
    blob, key_id = Vault(vault_key(new_master)).encrypt("c", CredentialType.BASIC, DATA)
    write_key_file(tmp_path / "flowyard.key.new", new_master)
    assert vault.decrypt("c", CredentialType.BASIC, blob, key_id) == DATA


def test_mask_shows_plain_fields_only() -> None:
    smtp = parse_data(
        CredentialType.SMTP, {"host": "smtp.x", "username": "robot", "password": "pw-123"}
    )
    assert mask(CredentialType.SMTP, smtp) == {
        "host": "smtp.x",
        "port": 587,
        "username": "robot",
        "password": MASK,
        "starttls": True,
    }
    custom = parse_data(CredentialType.CUSTOM, {"a": "secret-1", "b": "secret-2"})
    assert mask(CredentialType.CUSTOM, custom) == {"a": MASK, "b": MASK}
    sf = parse_data(
        CredentialType.SALESFORCE_OAUTH,
        {
            "instance_url": "https://acme.my.salesforce.com",
            "client_id": "cid",
            "client_secret": "cs",
            "refresh_token": "rt",
        },
    )
    assert mask(CredentialType.SALESFORCE_OAUTH, sf) == {
        "instance_url": "https://acme.my.salesforce.com",
        "client_id": "cid",
        "client_secret": MASK,
        "refresh_token": MASK,
        "token_url": None,
        "flow": "refresh_token",
        "private_key": None,
        "username": None,
        "api_version": "v62.0",
    }
    assert type(sf["flow"]) is str  # stored as JSON, like every other value


def test_invalid_data_is_located_without_echoing_values() -> None:
    with pytest.raises(InvalidInput) as info:
        parse_data(CredentialType.BASIC, {"username": "u", "password": "", "extra": "leaked-value"})
    pointers = {p.pointer for p in info.value.problems}
    assert pointers == {"/data/password", "/data/extra"}
    assert "leaked-value" not in repr(info.value.problems)
    with pytest.raises(InvalidInput):
        parse_data(CredentialType.BEARER, {"token": "x", "password": "y"})
    with pytest.raises(InvalidInput):
        parse_data(CredentialType.CUSTOM, {})


@pytest.mark.parametrize(
    ("type_", "data", "pointer"),
    [
        (CredentialType.BEARER, {"token": "abc"}, "/data/token"),
        (CredentialType.BASIC, {"username": "u", "password": "1234567"}, "/data/password"),
        (CredentialType.API_KEY_HEADER, {"value": "k"}, "/data/value"),
        (CredentialType.CUSTOM, {"ok": "long-enough", "k": "x"}, "/data/k"),
    ],
)
def test_http_style_secrets_have_at_least_eight_characters(
    type_: CredentialType, data: dict[str, str], pointer: str
) -> None:
    """Redaction replaces every occurrence of a secret: one of a character or two would
    garble every output of every step that used it."""
    with pytest.raises(InvalidInput) as info:
        parse_data(type_, data)
    assert [p.pointer for p in info.value.problems] == [pointer]
    assert "8" in info.value.problems[0].message
    longer = {k: (v + "-padded!" if k not in ("username",) else v) for k, v in data.items()}
    assert parse_data(type_, longer)


def test_resolved_credential_knows_derived_secrets_and_hides_its_values() -> None:
    resolved = ResolvedCredential.of("erp", CredentialType.BASIC, DATA)
    assert "pa55-w0rd-sekrit" in resolved.secrets
    assert "c3ZjOnBhNTUtdzByZC1zZWtyaXQ=" in resolved.secrets  # base64("svc:pa55-w0rd-sekrit")
    assert "svc" not in resolved.secrets  # the user name is not secret
    assert "pa55" not in repr(resolved)


def test_redact_walks_values_and_transitions() -> None:
    value = {"a": ["x-TOKEN-y", ("TOKEN",)], "TOKEN": 1, "n": 3}
    assert redact(value, {"TOKEN"}) == {
        "a": [f"x-{REDACTED}-y", (REDACTED,)],
        REDACTED: 1,
        "n": 3,
    }
    assert redact("abcdef", {"abc", "abcdef"}) == REDACTED  # longest first
    error = ErrorInfo("http.400", "said TOKEN", False, {"body": {"echo": "TOKEN"}})
    transition = Transition(
        StepStatus.FAILED,
        output={"k": "TOKEN"},
        error=error,
        fail_run=error,
        event=("step.failed", {"node_id": "TOKEN-node", "error": error.as_dict()}),
        extra_events=(("x", {"v": "TOKEN"}),),
    )
    clean = redact_result(transition, {"TOKEN"})
    assert "TOKEN" not in repr(dataclasses.asdict(clean))
    assert clean.step_status is StepStatus.FAILED
    assert clean.error is not None and clean.error.type == "http.400"
    assert clean.event[0] == "step.failed"
    assert redact_result(transition, set()) is transition


def test_redact_catches_case_encodings_and_derived_forms() -> None:
    secret = "s3cr3t/Value+Token"
    pair = base64.b64encode(f"user:{secret}".encode()).decode()
    echoes = {
        "upper": f"BEARER {secret.upper()}",
        "lower": secret.lower(),
        "b64": base64.b64encode(secret.encode()).decode(),
        "b64url": base64.urlsafe_b64encode(b"x" + secret.encode()).decode(),
        "pair": f"basic {pair.lower()}",
        "quoted": quote(secret, safe=""),
        "plus": quote_plus(secret),
        "json": json.dumps({"v": secret})[6:-1],
    }
    clean = redact(echoes, {secret})
    for name, value in clean.items():
        assert REDACTED in value, name
        assert secret.lower() not in value.lower(), name
    assert clean["upper"] == f"BEARER {REDACTED}"
    # HTML-escaped (an error page quoting it) and JSON with escaped slashes (PHP, Java).
    tricky = "t0ken/<&>'\"/value"
    for echo in (
        html.escape(tricky),
        html.escape(tricky, quote=False),
        html.escape(tricky).replace("&#x27;", "&#39;"),
        json.dumps(tricky)[1:-1].replace("/", "\\/"),
        json.dumps(tricky, ensure_ascii=False)[1:-1].replace("/", "\\/").upper(),
    ):
        assert redact(f"<p>{echo}</p>", {tricky}) == f"<p>{REDACTED}</p>", echo
    # Short secrets are matched as they are (any case) but not in encoded forms.
    assert redact("ab AB " + base64.b64encode(b"ab").decode(), {"ab"}) == "*** *** YWI="
