"""The master key (``FLOWYARD_SECRET_KEY`` or a 0600 key file) and HKDF sub-keys per purpose."""

from __future__ import annotations

import base64
import binascii
import errno
import os
import secrets
import stat
from pathlib import Path

import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from flowyard.domain.errors import FlowyardError
from flowyard.settings import Settings, data_dir

MIN_KEY_BYTES = 32


class MasterKeyError(FlowyardError):
    """The master key is missing, too short or unsafe to use."""

    code = "master-key"
    title = "Master key unusable"


def _decode(text: str) -> bytes:
    """Hex or (url-safe) base64 text to bytes."""
    text = text.strip()
    try:
        return bytes.fromhex(text)
    except ValueError:
        pass
    try:
        padded = text + "=" * (-len(text) % 4)
        altchars = b"-_" if "-" in text or "_" in text else None
        return base64.b64decode(padded, altchars=altchars, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MasterKeyError("the secret key is neither hex nor base64") from exc


def default_key_file(db_url: str) -> Path | None:
    """Next to a SQLite database file, ``flowyard.key`` in the data directory for a server
    database (never the current directory: every command finds the same key wherever it
    runs), None for an in-memory database (an ephemeral key)."""
    if "://" not in db_url:
        return Path(db_url).expanduser().with_suffix(".key")
    if db_url.startswith("sqlite"):
        database = sa.make_url(db_url).database or ""
        if database in ("", ":memory:"):
            return None
        return Path(database).expanduser().with_suffix(".key")
    return data_dir() / "flowyard.key"


def _read_key_file(path: Path) -> bytes:
    try:
        return _read_key_file_unchecked(path)
    except OSError as exc:
        raise MasterKeyError(f"cannot read key file {path}: {exc.strerror or exc}") from exc


def _read_key_file_unchecked(path: Path) -> bytes:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise MasterKeyError(
            f"key file {path} is readable by group or others (mode {stat.S_IMODE(mode):o}); "
            f"run: chmod 600 {path}"
        )
    key = _decode(path.read_text())
    if len(key) < MIN_KEY_BYTES:
        raise MasterKeyError(
            f"key file {path} holds {len(key)} bytes; at least {MIN_KEY_BYTES} needed"
        )
    return key


def _create_key_file(path: Path, key: bytes | None = None) -> bytes:
    """Create the key file whole or not at all, and return the key it holds.

    The key is written to a private temporary file (``O_CREAT | O_EXCL``, mode 0600) and
    fsynced, then hard-linked to ``path``: a link never replaces a file, so of processes
    starting together exactly one creates it and the others read that key; and no process
    ever sees the key file half-written (a crash or a full disk while writing leaves no
    key file, not an empty one that every later start would refuse)."""
    key = key or secrets.token_bytes(MIN_KEY_BYTES)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        created = _link_new(path, key)
    except OSError as exc:
        raise MasterKeyError(f"cannot create key file {path}: {exc.strerror or exc}") from exc
    return key if created else _read_key_file(path)


def _link_new(path: Path, key: bytes) -> bool:
    """Write ``key`` to a temporary file and link it as ``path``; False when ``path``
    exists already (another process created it)."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            f = os.fdopen(fd, "w")
        except BaseException:
            os.close(fd)  # not handed over to a file object
            raise
        with f:
            f.write(key.hex() + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            return _write_new(path, key)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_directory(path.parent)
    return True


#: A file system without hard links (some network and FUSE mounts) says so with these.
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV})


def _write_new(path: Path, key: bytes) -> bool:
    """Without hard links: create ``path`` exclusively and write it in place (a crash while
    writing can leave it incomplete; the file is refused then, never used as another key)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
        f.flush()
        os.fsync(f.fileno())
    return True


def _fsync_directory(directory: Path) -> None:
    """Make a new directory entry durable (where the platform allows opening a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def create_key_file(path: Path, key: bytes) -> bytes:
    """Write ``key`` to a new 0600 key file at ``path`` and return it; when another process
    created the file first, return the key it holds instead."""
    return _create_key_file(path, key)


def master_key_candidate(settings: Settings) -> tuple[bytes, Path | None]:
    """The master key without writing anything: ``(key, None)`` when it comes from
    ``secret_key``, an existing key file or is ephemeral; ``(a new random key, path)`` when
    the key file does not exist yet, so the caller can check the database before creating it
    (:func:`create_key_file`)."""
    path = key_file_path(settings)
    if settings.secret_key is not None or path is None or path.exists():
        return load_master_key(settings), None
    return secrets.token_bytes(MIN_KEY_BYTES), path


def load_master_key(settings: Settings) -> bytes:
    """The master key: ``secret_key`` if set, else the key file (created at first start with
    mode 0600; refused when group/world-readable)."""
    if settings.secret_key is not None:
        key = _decode(settings.secret_key.get_secret_value())
        if len(key) < MIN_KEY_BYTES:
            raise MasterKeyError(
                f"FLOWYARD_SECRET_KEY holds {len(key)} bytes; at least {MIN_KEY_BYTES} needed"
            )
        return key
    path = Path(settings.key_file) if settings.key_file else default_key_file(settings.db_url)
    if path is None:
        return secrets.token_bytes(MIN_KEY_BYTES)
    if path.exists():
        return _read_key_file(path)
    return _create_key_file(path)


def derive_key(master: bytes, purpose: str, length: int = 32) -> bytes:
    """A sub-key for one purpose (``"jwt"``, ``"vault"``) by HKDF-SHA256."""
    hkdf = HKDF(
        algorithm=hashes.SHA256(), length=length, salt=None, info=f"flowyard:{purpose}".encode()
    )
    return hkdf.derive(master)


def parse_key(text: str, what: str) -> bytes:
    """A master key given as hex or base64 text (``what`` names its source in errors)."""
    key = _decode(text)
    if len(key) < MIN_KEY_BYTES:
        raise MasterKeyError(f"{what} holds {len(key)} bytes; at least {MIN_KEY_BYTES} needed")
    return key


def key_file_path(settings: Settings) -> Path | None:
    """The key file in use: None when ``secret_key`` is set or the key is ephemeral."""
    if settings.secret_key is not None:
        return None
    return Path(settings.key_file) if settings.key_file else default_key_file(settings.db_url)


def read_key_file(path: Path) -> bytes:
    """The key in an existing key file (refused when group/world-readable or too short)."""
    return _read_key_file(path)


def write_key_file(path: Path, key: bytes) -> None:
    """Write ``key`` to a new file, mode 0600, flushed to disk (FileExistsError if present)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
        f.flush()
        os.fsync(f.fileno())
