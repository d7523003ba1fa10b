"""Backup encryption: AES-256-GCM in 1 MiB chunks, so a backup of any size is sealed in little memory.

File format (version 1), all integers big-endian:

    header  = b"CLBACKUP" | version (1 byte, 0x01) | chunk size (uint32) | nonce prefix (7 random bytes)
    chunk i = ciphertext length (uint32) | AES-GCM ciphertext with its 16-byte tag

Chunk i is sealed with the nonce `prefix | i (uint32) | last (0x01 on the final chunk, else 0x00)` and
the 20-byte header as associated data (the STREAM construction): a reordered, truncated or extended
file fails to open, as does any flipped bit. An empty file is one empty final chunk. The key is 32
bytes, kept base64-encoded in the key file (`cashloop backup --make-key PATH` writes one, 0600).
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"CLBACKUP"
VERSION = 1
CHUNK = 1024 * 1024
_HEADER = struct.Struct(">8sBI7s")
_LENGTH = struct.Struct(">I")
TAG = 16


class EncryptionError(ValueError):
    """The key is unusable, or a file does not open with it (wrong key, damaged or cut short)."""


def make_key(path: Path) -> None:
    """Write a new random key to `path` (mode 0600); refuses to replace an existing file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(base64.b64encode(AESGCM.generate_key(bit_length=256)).decode() + "\n")


def load_key(path: Path) -> bytes:
    """The 32-byte key in `path` (base64 text). Raises EncryptionError with what is wrong."""
    try:
        text = Path(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise EncryptionError(f"cannot read the backup key {path}: {exc}") from exc
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EncryptionError(f"the backup key {path} is not base64 text") from exc
    if len(key) != 32:
        raise EncryptionError(f"the backup key {path} holds {len(key)} bytes; AES-256 needs 32")
    return key


def is_encrypted(path: Path) -> bool:
    with Path(path).open("rb") as fh:
        return fh.read(len(MAGIC)) == MAGIC


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + struct.pack(">IB", index, 1 if last else 0)


def encrypt_file(source: Path, target: Path, key: bytes, *, chunk: int = CHUNK) -> None:
    """Seal `source` into `target` (created 0600, must not exist)."""
    aes = AESGCM(key)
    header = _HEADER.pack(MAGIC, VERSION, chunk, os.urandom(7))
    prefix = header[-7:]
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with Path(source).open("rb") as src, os.fdopen(fd, "wb") as out:
        out.write(header)
        index = 0
        data = src.read(chunk)
        while True:
            following = src.read(chunk) if data else b""
            last = not following
            sealed = aes.encrypt(_nonce(prefix, index, last), data, header)
            out.write(_LENGTH.pack(len(sealed)) + sealed)
            if last:
                break
            data, index = following, index + 1
        out.flush()
        os.fsync(out.fileno())


def decrypt_file(source: Path, target: Path, key: bytes) -> None:
    """Open `source` into `target` (created 0600, must not exist); raises EncryptionError, leaving
    `target` for the caller to remove."""
    aes = AESGCM(key)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with Path(source).open("rb") as src, os.fdopen(fd, "wb") as out:
        header = src.read(_HEADER.size)
        if len(header) != _HEADER.size:
            raise EncryptionError(f"{source} is not an encrypted Cashloop backup (too short)")
        magic, version, chunk, prefix = _HEADER.unpack(header)
        if magic != MAGIC or version != VERSION:
            raise EncryptionError(f"{source} is not a version {VERSION} encrypted Cashloop backup")
        index = 0
        while True:
            raw = src.read(_LENGTH.size)
            if len(raw) != _LENGTH.size:
                raise EncryptionError(f"{source} is cut short (chunk {index} missing)")
            (length,) = _LENGTH.unpack(raw)
            if length > chunk + TAG:
                raise EncryptionError(f"{source} is damaged (chunk {index} too long)")
            sealed = src.read(length)
            if len(sealed) != length:
                raise EncryptionError(f"{source} is cut short (in chunk {index})")
            last = src.peek(1) == b"" if hasattr(src, "peek") else False
            try:
                data = aes.decrypt(_nonce(prefix, index, last), sealed, header)
            except InvalidTag:
                raise EncryptionError(
                    f"{source} does not open with this key (wrong key, or the file is damaged)"
                ) from None
            out.write(data)
            if last:
                break
            index += 1
        out.flush()
        os.fsync(out.fileno())
