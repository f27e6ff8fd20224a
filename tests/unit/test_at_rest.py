"""Data at rest: key files, key rings, sealing, rotation and re-wrapping."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import struct
from pathlib import Path

import pytest
from Crypto.Cipher import AES

from sandbox import AlreadyExists
from sandbox.crypto import (
    KeyFileInsecure,
    KeyFileInvalid,
    KeyRing,
    KeyUnknown,
    blob_key_id,
    generate_key_file,
    key_id,
    rotate_key_file,
)

CONTEXT = b"result:job-0001"
KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _write_key_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_round_trip() -> None:
    ring = KeyRing([KEY_A])
    for plaintext in (b"", b"x", os.urandom(70_000)):
        blob = ring.seal_at_rest(plaintext, context=CONTEXT)
        assert ring.open_at_rest(blob, context=CONTEXT) == plaintext


def test_key_id_is_sha256_prefix() -> None:
    assert key_id(KEY_A) == hashlib.sha256(KEY_A).hexdigest()[:16]
    ring = KeyRing([KEY_A, KEY_B])
    assert ring.key_ids == (key_id(KEY_A), key_id(KEY_B))
    assert ring.active_key_id == key_id(KEY_B)
    assert blob_key_id(ring.seal_at_rest(b"x", context=CONTEXT)) == key_id(KEY_B)


def test_blob_layout_matches_the_docstring() -> None:
    ring = KeyRing([KEY_A])
    blob = ring.seal_at_rest(b"payload", context=CONTEXT)
    magic, version, raw_id = struct.unpack(">4sB8s", blob[:13])
    assert (magic, version, raw_id.hex()) == (b"SBXR", 1, key_id(KEY_A))
    nonce, tag, ciphertext = blob[13:25], blob[25:41], blob[41:]
    ad = b"SBXR\x01" + b"".join(len(f).to_bytes(4, "big") + f for f in (raw_id, CONTEXT))
    # Opened with another library (pycryptodome) than the one that sealed it (cryptography).
    cipher = AES.new(KEY_A, AES.MODE_GCM, nonce=nonce)
    cipher.update(ad)
    assert cipher.decrypt_and_verify(ciphertext, tag) == b"payload"


def test_repr_shows_ids_not_keys() -> None:
    ring = KeyRing([KEY_A, KEY_B], source="test")
    text = repr(ring)
    assert key_id(KEY_A) in text and key_id(KEY_B) in text
    for key in (KEY_A, KEY_B):
        assert key.hex() not in text
        assert base64.b64encode(key).decode() not in text
        assert repr(key) not in text


def test_unknown_key_id_is_named() -> None:
    blob = KeyRing([KEY_A]).seal_at_rest(b"x", context=CONTEXT)
    with pytest.raises(KeyUnknown, match=key_id(KEY_A)):
        KeyRing([KEY_B]).open_at_rest(blob, context=CONTEXT)


# -- key files ----------------------------------------------------------------------------


def test_generate_key_file(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    ring = generate_key_file(path)
    assert _mode(path) == 0o600
    assert len(ring.key_ids) == 1
    assert KeyRing.from_file(path).key_ids == ring.key_ids
    with pytest.raises(AlreadyExists, match=str(path)):
        generate_key_file(path)
    assert [p.name for p in tmp_path.iterdir()] == ["keys"]  # no temporary file left


def test_key_file_formats_comments_and_order(tmp_path: Path) -> None:
    text = (
        "# old key, hex\n"
        f"{KEY_A.hex()}\n"
        "\n"
        "   # new key, base64 (active)\n"
        f"  {base64.b64encode(KEY_B).decode()}  \n"
    )
    ring = KeyRing.from_file(_write_key_file(tmp_path / "keys", text))
    assert ring.key_ids == (key_id(KEY_A), key_id(KEY_B))
    assert ring.active_key_id == key_id(KEY_B)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o660, 0o644, 0o700 | 0o007])
def test_key_file_open_to_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = _write_key_file(tmp_path / "keys", KEY_A.hex() + "\n", mode)
    with pytest.raises(KeyFileInsecure, match="chmod 600") as info:
        KeyRing.from_file(path)
    assert str(path) in str(info.value)
    assert f"{mode:04o}" in str(info.value)
    with pytest.raises(KeyFileInsecure):
        rotate_key_file(path)


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_owner_only_modes_are_accepted(tmp_path: Path, mode: int) -> None:
    path = _write_key_file(tmp_path / "keys", KEY_A.hex() + "\n", mode)
    assert KeyRing.from_file(path).key_ids == (key_id(KEY_A),)


def test_missing_key_file(tmp_path: Path) -> None:
    path = tmp_path / "absent"
    with pytest.raises(KeyFileInvalid, match=f"{path} does not exist"):
        KeyRing.from_file(path)


@pytest.mark.parametrize(
    "bad",
    [
        "s3cr3t-not-a-key",
        KEY_A.hex()[:-2],  # 31 bytes
        KEY_A.hex()[:-1] + "g",  # 64 characters, not hex
        base64.b64encode(KEY_A + b"x").decode(),  # 33 bytes
        base64.urlsafe_b64encode(b"\xfb" * 32).decode(),  # not standard base64
    ],
)
def test_malformed_line_is_named_without_its_text(tmp_path: Path, bad: str) -> None:
    path = _write_key_file(tmp_path / "keys", f"# keys\n{KEY_A.hex()}\n{bad}\n")
    with pytest.raises(KeyFileInvalid, match="line 3") as info:
        KeyRing.from_file(path)
    assert bad not in str(info.value)
    assert KEY_A.hex() not in str(info.value)


def test_empty_and_duplicate_key_files(tmp_path: Path) -> None:
    with pytest.raises(KeyFileInvalid, match="no keys"):
        KeyRing.from_file(_write_key_file(tmp_path / "empty", "# nothing yet\n"))
    duplicate = f"{KEY_A.hex()}\n{base64.b64encode(KEY_A).decode()}\n"
    with pytest.raises(KeyFileInvalid, match="appears twice"):
        KeyRing.from_file(_write_key_file(tmp_path / "dup", duplicate))


def test_from_env_value() -> None:
    value = f"{KEY_A.hex()}, {base64.b64encode(KEY_B).decode()}"
    ring = KeyRing.from_env_value(value, source="SANDBOX_AT_REST_KEYS")
    assert ring.key_ids == (key_id(KEY_A), key_id(KEY_B))
    with pytest.raises(KeyFileInvalid, match="SANDBOX_AT_REST_KEYS: entry 2") as info:
        KeyRing.from_env_value(f"{KEY_A.hex()} oops", source="SANDBOX_AT_REST_KEYS")
    assert "oops" not in str(info.value)
    with pytest.raises(KeyFileInvalid, match="no keys"):
        KeyRing.from_env_value("  ")


# -- rotation -----------------------------------------------------------------------------


def test_rotation_keeps_old_blobs_readable_and_rewrap_moves_them(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    ring = generate_key_file(path)
    blobs = {}
    for generation in range(3):
        context = f"blob:{generation}".encode()
        blobs[context] = (ring.active_key_id, ring.seal_at_rest(context * 3, context=context))
        ring = rotate_key_file(path)
        assert _mode(path) == 0o600
    assert len(ring.key_ids) == 4
    assert KeyRing.from_file(path).key_ids == ring.key_ids
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys"]

    for context, (old_id, blob) in blobs.items():
        assert blob_key_id(blob) == old_id != ring.active_key_id
        assert ring.open_at_rest(blob, context=context) == context * 3
        moved = ring.rewrap(blob, context=context)
        assert blob_key_id(moved) == ring.active_key_id
        assert ring.open_at_rest(moved, context=context) == context * 3
        assert ring.rewrap(moved, context=context) == moved  # already under the active key

    # Once the old keys are dropped, only re-wrapped blobs still open.
    newest = KeyRing.from_env_value(path.read_text().splitlines()[-1])
    context, (_, blob) = next(iter(blobs.items()))
    with pytest.raises(KeyUnknown):
        newest.open_at_rest(blob, context=context)
    assert newest.open_at_rest(ring.rewrap(blob, context=context), context=context)


def test_rotation_preserves_existing_lines(tmp_path: Path) -> None:
    path = _write_key_file(tmp_path / "keys", f"# ops note\n{KEY_A.hex()}")  # no final newline
    ring = rotate_key_file(path)
    lines = path.read_text().splitlines()
    assert lines[:2] == ["# ops note", KEY_A.hex()]
    assert len(lines) == 3
    assert ring.key_ids[0] == key_id(KEY_A)
    assert ring.active_key_id != key_id(KEY_A)


def test_rotation_refuses_a_broken_file(tmp_path: Path) -> None:
    path = _write_key_file(tmp_path / "keys", "garbage\n")
    with pytest.raises(KeyFileInvalid, match="line 1"):
        rotate_key_file(path)
    assert path.read_text() == "garbage\n"


def test_rotation_through_a_symlink_keeps_the_link(tmp_path: Path) -> None:
    real = tmp_path / "secrets" / "keys"
    real.parent.mkdir()
    generate_key_file(real)
    link = tmp_path / "keys"
    link.symlink_to(real)
    ring = rotate_key_file(link)
    assert link.is_symlink()
    assert KeyRing.from_file(real).key_ids == ring.key_ids
    assert len(ring.key_ids) == 2


@pytest.mark.parametrize("keys", [[b"short"], [KEY_A, bytes(33)], [KEY_A.hex().encode()]])
def test_key_ring_refuses_keys_of_the_wrong_length(keys: list[bytes]) -> None:
    with pytest.raises(KeyFileInvalid, match="is not 32 bytes"):
        KeyRing(keys)
