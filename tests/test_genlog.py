"""The generation log at rest: encrypted (Parquet modular encryption, AES-GCM frames for
the open file) and anonymized, in both the open stream file and the rotated Parquet."""

from __future__ import annotations

import base64
import secrets
import time
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from genai.serve import genlog
from genai.serve.anonymize import Anonymizer
from genai.serve.logcrypt import Cipher, LogKeyError, load_key

EMAIL = "jane.doe@example.org"
PHONE = "+44 20 7946 0958"


def _spec(directory: Path, **kw) -> SimpleNamespace:
    base = dict(
        mode="full",
        save_images=False,
        flush_s=0.05,
        rotate_s=300.0,
        rotate_mb=64,
        dir=str(directory),
        encryption=None,
        anonymize=False,
        salt_env="GENAI_TEST_SALT_UNSET",
    )
    return SimpleNamespace(**{**base, **kw})


def _record(log: genlog.GenerationLog, i: int) -> None:
    log.record(
        {
            "id": f"cmpl-{i:024x}",
            "time": time.time(),
            "status": 200,
            "prompt": f"write to {EMAIL} or call {PHONE}",
            "output": f"Sure: {EMAIL} from 10.1.2.3",
        }
    )


def _wait_for_flush(directory: Path) -> None:
    deadline = time.time() + 10
    while time.time() < deadline:
        files = list(directory.glob("generations-*.arrows"))
        if files and files[0].stat().st_size > 200:
            return
        time.sleep(0.05)
    raise AssertionError("nothing flushed")


def _bytes_on_disk(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in directory.rglob("*") if p.is_file())


@pytest.fixture
def key(monkeypatch) -> bytes:
    raw = secrets.token_bytes(32)
    monkeypatch.setenv("GENAI_LOG_KEY", base64.b64encode(raw).decode())
    return raw


def test_encrypted_and_anonymized_log_open_file_and_parquet(tmp_path, key):
    encryption = SimpleNamespace(key_file=None, key_env="GENAI_LOG_KEY", kms_client=None)
    log = genlog.GenerationLog(_spec(tmp_path, encryption=encryption, anonymize=True), "r1")
    for i in range(3):
        _record(log, i)
    _wait_for_flush(tmp_path)

    # the open file: neither the planted address nor any plaintext is on disk
    disk = _bytes_on_disk(tmp_path)
    assert EMAIL.encode() not in disk and b"Sure" not in disk and b"cmpl-" not in disk
    cipher = Cipher(key)
    table, skipped = genlog.read(tmp_path, cipher=cipher)
    assert table.num_rows == 3 and not skipped  # readable while open, with the key
    row = table.to_pylist()[0]
    assert EMAIL not in row["prompt"] and "<email:" in row["prompt"] and "<phone:" in row["prompt"]
    assert row["output"].startswith("Sure: <email:") and "<ip:" in row["output"]
    # the same address hashes alike in prompt and output (analysis can still join them)
    token = row["prompt"].split()[2]
    assert token in row["output"]

    # without the key: listed as skipped, nothing read
    table, skipped = genlog.read(tmp_path)
    assert table.num_rows == 0 and [why for _, why in skipped] == [
        "encrypted (set the generation log key)"
    ]
    # a wrong key does not open it either
    _, skipped = genlog.read(tmp_path, cipher=Cipher(secrets.token_bytes(32)))
    assert "does not open" in skipped[0][1]

    log.close()  # rotated into encrypted Parquet
    (done,) = tmp_path.glob("generations-*.parquet")
    assert not list(tmp_path.glob("*.arrows"))
    assert EMAIL.encode() not in _bytes_on_disk(tmp_path)
    with pytest.raises((OSError, pa.ArrowException)):
        pq.read_table(done)  # no key, no file
    table, skipped = genlog.read(tmp_path, cipher=cipher)
    assert table.num_rows == 3 and not skipped
    assert table.to_pylist()[0]["output"] == row["output"]
    _, skipped = genlog.read(tmp_path)
    assert [p.name for p, _ in skipped] == [done.name]


def test_anonymized_plain_log_keeps_no_address_and_is_read_as_before(tmp_path):
    log = genlog.GenerationLog(_spec(tmp_path, anonymize=True), "r1")
    _record(log, 0)
    log.score("cmpl-" + "0" * 24, 1.0, f"mail {EMAIL}", "k")
    _wait_for_flush(tmp_path)
    assert EMAIL.encode() not in _bytes_on_disk(tmp_path)
    log.close()
    assert EMAIL.encode() not in _bytes_on_disk(tmp_path)
    (row,) = genlog.read(tmp_path)[0].to_pylist()
    assert "<email:" in row["prompt"] and row["comment"].startswith("mail <email:")
    # the salt is kept beside the log, readable by its owner only
    assert (tmp_path / ".salt").stat().st_mode & 0o077 == 0


def test_a_request_answered_a_moment_ago_is_listed(tmp_path):
    """The open file is read up to its last flush: no rotation needed."""
    log = genlog.GenerationLog(_spec(tmp_path, rotate_s=3600), "r1")
    _record(log, 0)
    _wait_for_flush(tmp_path)
    rows = genlog.recent(tmp_path, 5)
    assert [r["id"] for r in rows] == ["cmpl-" + "0" * 24]
    log.close()


def test_anonymizer_patterns():
    a = Anonymizer(b"salt")
    text = (
        "x@y.io, 192.168.0.1, ::1, fe80::1ff:fe23:4567:890a, +1 (555) 123-4567, "
        "4111 1111 1111 1111, DE89 3704 0044 0532 0130 00"
    )
    out = a(text)
    for kind in ("email", "ip", "ipv6", "phone", "card", "iban"):
        assert f"<{kind}:" in out, (kind, out)
    for keep in ("std::vector", "a::b", "version 3.11.7", "12:30:45", "x = 12345", "{1: 2}"):
        assert a(keep) == keep
    assert Anonymizer(b"other")(EMAIL) != a(EMAIL) and a(EMAIL) == a(EMAIL)


def test_key_errors_name_where_the_key_was_looked_for(tmp_path, monkeypatch):
    monkeypatch.delenv("GENAI_LOG_KEY", raising=False)
    with pytest.raises(LogKeyError, match=r"no key \(set \$GENAI_LOG_KEY or encryption.key_file\)"):
        load_key(None, "GENAI_LOG_KEY")
    (tmp_path / "k").write_text(base64.b64encode(b"short").decode())
    with pytest.raises(LogKeyError, match="must be 32 bytes"):
        load_key(str(tmp_path / "k"), "GENAI_LOG_KEY")
    with pytest.raises(LogKeyError, match="key_file .* does not exist"):
        load_key(str(tmp_path / "missing"), "GENAI_LOG_KEY")
