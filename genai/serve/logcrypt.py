"""Encryption of the generation log at rest.

- Completed files are Parquet with **modular encryption** (``pyarrow.parquet.encryption``):
  every column and the footer are encrypted (AES-GCM) with data keys that are wrapped by a
  master key. Without the master key a file does not open at all.
- The open file (an Arrow IPC stream, see genai/serve/genlog.py) is written in frames,
  each an AES-GCM encryption of the stream's bytes since the last flush, so it is as
  unreadable without the key and as durable as the plain one.

The master key (32 random bytes, base64) comes from a local file or an environment
variable. That is the local KMS: :class:`LocalKms` wraps Parquet's data keys with it. A
real KMS (Vault, AWS KMS, GCP KMS) plugs in as a ``pyarrow.parquet.encryption.KmsClient``
subclass whose ``wrap_key``/``unwrap_key`` call it, named by ``encryption.kms_client``
(``module:Class``, constructed with the ``KmsConnectionConfig``); the open file's frames
still need a local key, which such a deployment keeps in the same secret store.

    python -c "import base64, secrets; print(base64.b64encode(secrets.token_bytes(32)).decode())"
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
from pathlib import Path
from typing import Any

import pyarrow.parquet.encryption as pe

MAGIC = b"GENAI-LOG-AESGCM1\n"  # the first bytes of an encrypted open file
_AAD = b"genai-generation-log"
_MASTER_ID = "genai-log-master"


class LogKeyError(ValueError):
    """No key, or a wrong one, for an encrypted log."""


def parse_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise LogKeyError(f"{where}: not base64") from None
    if len(key) != 32:
        raise LogKeyError(f"{where}: the key must be 32 bytes (base64), got {len(key)}")
    return key


def load_key(key_file: str | None, key_env: str) -> bytes:
    """The master key: from ``key_file`` if set, else from ``$key_env``."""
    if key_file:
        path = Path(key_file).expanduser()
        if not path.is_file():
            raise LogKeyError(f"generation_log.encryption.key_file {key_file!r} does not exist")
        return parse_key(path.read_text(), f"generation_log.encryption.key_file {key_file!r}")
    text = os.environ.get(key_env, "")
    if not text:
        raise LogKeyError(
            f"generation_log.encryption: no key (set ${key_env} or encryption.key_file)"
        )
    return parse_key(text, f"${key_env}")


class Cipher:
    """AES-GCM frames for the open file, and Parquet encryption properties."""

    def __init__(self, key: bytes, kms_client: str | None = None) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.key = key
        self._aead = AESGCM(key)
        self._kms_client = kms_client

    # ---------------------------------------------------------------- open-file frames

    def frame(self, data: bytes) -> bytes:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, data, _AAD)
        return struct.pack(">I", len(sealed)) + nonce + sealed

    def unframe(self, blob: bytes) -> bytes:
        """The plaintext of every complete frame (a torn last one, from a kill, is left)."""
        from cryptography.exceptions import InvalidTag

        out, pos = bytearray(), len(MAGIC)
        while pos + 16 <= len(blob):
            (n,) = struct.unpack(">I", blob[pos : pos + 4])
            nonce, sealed = blob[pos + 4 : pos + 16], blob[pos + 16 : pos + 16 + n]
            if len(sealed) < n:
                break
            try:
                out += self._aead.decrypt(nonce, sealed, _AAD)
            except InvalidTag:
                raise LogKeyError("the generation log key does not open this file") from None
            pos += 16 + n
        return bytes(out)

    # ---------------------------------------------------------------- Parquet

    def _factory(self) -> Any:
        if self._kms_client:
            from genai.families.base import load_attr

            cls = load_attr(self._kms_client)
            return pe.CryptoFactory(lambda config: cls(config))
        key = self.key
        return pe.CryptoFactory(lambda config: LocalKms(config, key))

    def parquet_encryption(self) -> Any:
        config = pe.EncryptionConfiguration(
            footer_key=_MASTER_ID, uniform_encryption=True, plaintext_footer=False
        )
        return self._factory().file_encryption_properties(pe.KmsConnectionConfig(), config)

    def parquet_decryption(self) -> Any:
        return self._factory().file_decryption_properties(
            pe.KmsConnectionConfig(), pe.DecryptionConfiguration()
        )


class LocalKms(pe.KmsClient):  # type: ignore[misc]
    """Parquet's KMS interface over the local master key: data keys are wrapped with
    AES-GCM under it (what a real KMS does on its side)."""

    def __init__(self, config: Any, master: bytes) -> None:
        super().__init__()
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(master)

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, key_bytes, master_key_identifier.encode())
        return base64.b64encode(nonce + sealed).decode()

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        from cryptography.exceptions import InvalidTag

        blob = base64.b64decode(wrapped_key)
        try:
            return self._aead.decrypt(blob[:12], blob[12:], master_key_identifier.encode())
        except InvalidTag:
            raise LogKeyError("the generation log key does not open this file") from None


def is_encrypted_parquet(path: Path) -> bool:
    """Parquet files with an encrypted footer end in ``PARE`` rather than ``PAR1``."""
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() < 4:
            return False
        f.seek(-4, os.SEEK_END)
        return f.read(4) == b"PARE"


def plaintext(blob: bytes, cipher: Cipher | None) -> bytes:
    """The IPC stream bytes of an open file, decrypted if it is encrypted."""
    if not blob.startswith(MAGIC):
        return blob
    if cipher is None:
        raise LogKeyError("encrypted (set the generation log key)")
    return cipher.unframe(blob)
