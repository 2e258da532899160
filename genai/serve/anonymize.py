"""Anonymization of stored text: e-mail addresses, phone numbers, IP addresses, card-like
numbers and IBANs become salted hashes (``<email:3f9a0c1b>``) in the generation log.

A salted hash keeps what analysis needs (the same address in two records is the same
token; different ones differ) without the value. The salt is secret: from
``$GENAI_LOG_SALT`` (or the spec's ``salt_env``), else made once and kept, readable by its
owner only, at ``<log dir>/.salt``. Only what is stored changes: the client gets its text
as generated.

Patterns find the common forms, not every one: a phone number written in words, or an
address split across lines, stays. They are not a substitute for keeping the log off
(``mode: metadata``) where text must never be stored.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
import secrets
from pathlib import Path

# most specific first: an IPv4 address is also a run of digits
_PATTERNS = [
    ("email", re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")),
    ("ipv6", re.compile(r"(?<![\w:])[0-9A-Fa-f:]*:[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*(?![\w:])")),
    (
        "ip",
        re.compile(
            r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\d.])"
        ),
    ),
    ("iban", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}(?: ?[A-Z0-9]{1,3})?\b")),
    ("card", re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")),
    ("phone", re.compile(r"(?<![\w+])\+?\d[\d ().-]{6,}\d(?!\w)")),
]


def salt_for(directory: Path, env: str) -> bytes:
    value = os.environ.get(env)
    if value:
        return value.encode()
    path = directory / ".salt"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another replica made it first
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


class Anonymizer:
    def __init__(self, salt: bytes) -> None:
        self.salt = salt

    def token(self, kind: str, value: str) -> str:
        digest = hmac.new(self.salt, value.encode(), hashlib.sha256).hexdigest()[:8]
        return f"<{kind}:{digest}>"

    def __call__(self, text: str | None) -> str | None:
        if not text:
            return text
        for kind, pattern in _PATTERNS:
            text = pattern.sub(lambda m, k=kind: self._replace(k, m.group(0)), text)
        return text

    def _replace(self, kind: str, value: str) -> str:
        if kind == "ipv6":  # the pattern is loose (any run with two colons): check it
            if not any(c.isdigit() for c in value):
                return value  # `a::b` is an address too, but far likelier C++ or Rust
            try:
                ipaddress.IPv6Address(value)
            except ValueError:
                return value
        return self.token(kind, value)
