"""The secret box (actionq.secrets): what it seals opens with its key and with
no other, a corrupt value is refused, a key file others may read or that
holds no key is refused, ``create_key_file`` makes a private key once and
keeps it, and no message ever holds key material or the secret."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from actionq.errors import ConfigurationError, SecretKeyError
from actionq.secrets import (
    SEALED_PREFIX,
    SecretBox,
    create_key_file,
    is_secret_setting,
    read_key_file,
)
from actionq.settings import Settings
from actionq.tasks.execution import tool_env
from actionq.tools.sandbox import tool_environment

SECRET = "sk-live-3c9f7a2e-secret-value"


@pytest.fixture(autouse=True)
def no_actionq_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("ACTIONQ_")]:
        monkeypatch.delenv(name)


def key_file(path: Path, key: bytes | None = None, mode: int = 0o600) -> Path:
    path.write_bytes((key or Fernet.generate_key()) + b"\n")
    path.chmod(mode)
    return path


def box_of(*files: Path) -> SecretBox:
    settings = Settings(
        secret_key_file=str(files[0]),
        secret_key_file_old=str(files[1]) if len(files) > 1 else None,
    )
    box = SecretBox.from_settings(settings)
    assert box is not None
    return box


def refusal(error: pytest.ExceptionInfo[SecretKeyError], *never: str | bytes) -> str:
    """The one-line message, checked to hold none of ``never``."""
    message = str(error.value)
    assert "\n" not in message, message
    assert isinstance(error.value, ConfigurationError)
    for text in never:
        shown = text.decode() if isinstance(text, bytes) else text
        assert shown not in message, message
        assert shown not in repr(error.value)
    # Nothing chained that a traceback would print (a cause could quote the file).
    assert error.value.__cause__ is None
    assert error.value.__context__ is None or error.value.__suppress_context__
    return message


def test_what_is_sealed_opens_and_holds_no_plaintext(tmp_path: Path) -> None:
    key = Fernet.generate_key()
    box = box_of(key_file(tmp_path / "k", key))
    sealed = box.seal(SECRET)
    assert sealed.startswith(SEALED_PREFIX) and sealed.isascii()
    assert SECRET not in sealed and key.decode() not in sealed
    assert box.seal(SECRET) != sealed  # a new IV each time
    assert box.open(sealed) == SECRET
    assert box.open(box.seal("ünïcode ✓")) == "ünïcode ✓"
    assert key.decode() not in repr(box)
    # Another box on the same file opens it (another process, a restart).
    assert box_of(tmp_path / "k").open(sealed) == SECRET


def test_another_key_does_not_open_it(tmp_path: Path) -> None:
    sealed = box_of(key_file(tmp_path / "a")).seal(SECRET)
    other_key = Fernet.generate_key()
    with pytest.raises(SecretKeyError) as refused:
        box_of(key_file(tmp_path / "b", other_key)).open(sealed)
    message = refusal(refused, SECRET, other_key, (tmp_path / "a").read_bytes().strip())
    assert "another key" in message and "ACTIONQ_SECRET_KEY_FILE" in message


def test_a_corrupt_or_foreign_value_is_refused(tmp_path: Path) -> None:
    box = box_of(key_file(tmp_path / "k"))
    sealed = box.seal(SECRET)
    token = sealed.removeprefix(SEALED_PREFIX)
    flipped = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
    for corrupt in (SEALED_PREFIX + flipped, sealed[:-8], SEALED_PREFIX, SEALED_PREFIX + "é"):
        with pytest.raises(SecretKeyError) as refused:
            box.open(corrupt)
        refusal(refused, SECRET, corrupt)
    for foreign in (token, SECRET, ""):  # no prefix: not something seal made
        with pytest.raises(SecretKeyError, match="not a sealed secret") as refused:
            box.open(foreign)
        refusal(refused, SECRET)


def test_rotation_opens_the_old_seals_with_the_new_key(tmp_path: Path) -> None:
    old = key_file(tmp_path / "old")
    sealed_before = box_of(old).seal(SECRET)
    rotated = box_of(key_file(tmp_path / "new"), old)
    assert rotated.open(sealed_before) == SECRET
    resealed = rotated.rotate(sealed_before)
    assert box_of(tmp_path / "new").open(resealed) == SECRET  # the old key can go
    assert box_of(tmp_path / "new").open(rotated.seal(SECRET)) == SECRET  # seals with the new
    with pytest.raises(SecretKeyError):
        box_of(tmp_path / "new").open(sealed_before)
    with pytest.raises(SecretKeyError, match="ACTIONQ_SECRET_KEY_FILE_OLD is set without"):
        SecretBox.from_settings(Settings(secret_key_file_old=str(old)))


def test_no_key_file_configured_is_no_box() -> None:
    assert SecretBox.from_settings(Settings(secret_key_file=None)) is None
    assert SecretBox.from_settings(Settings(secret_key_file="")) is None


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o644, 0o666])
def test_a_key_file_others_may_reach_is_refused(tmp_path: Path, mode: int) -> None:
    key = Fernet.generate_key()
    path = key_file(tmp_path / "k", key, mode)
    with pytest.raises(SecretKeyError) as refused:
        box_of(path)
    message = refusal(refused, key)
    assert f"mode {mode:04o}" in message and f"chmod 600 {path}" in message
    assert message.startswith("ACTIONQ_SECRET_KEY_FILE: ")
    path.chmod(0o400)  # read-only for its owner is private too
    assert box_of(path).open(box_of(path).seal("x")) == "x"


def test_a_malformed_or_missing_key_file_is_refused_without_its_content(tmp_path: Path) -> None:
    valid = Fernet.generate_key().decode()
    for content in (
        "not-a-key-but-maybe-a-password",
        valid[:-4],  # truncated
        valid + "AAAA",  # too long
        "",
        "sk-" + "x" * 2000,  # an LLM key pasted by mistake, and long
        "\xff\xfe binary",
    ):
        path = tmp_path / "bad"
        path.write_text(content, encoding="latin-1")
        path.chmod(0o600)
        with pytest.raises(SecretKeyError) as refused:
            read_key_file(path)
        never = [content[i : i + 12] for i in range(0, len(content) - 11, 6)] or [content]
        message = refusal(refused, *[part for part in never if part.strip()])
        assert "does not hold a Fernet key" in message and str(path) in message
    with pytest.raises(SecretKeyError, match=r"cannot read .*No such file") as refused:
        read_key_file(tmp_path / "absent")
    refusal(refused)
    with pytest.raises(SecretKeyError, match="not a regular file") as refused:
        read_key_file(tmp_path)
    refusal(refused)
    old = key_file(tmp_path / "old", mode=0o644)
    with pytest.raises(SecretKeyError, match=r"^ACTIONQ_SECRET_KEY_FILE_OLD: ") as refused:
        box_of(key_file(tmp_path / "current"), old)


def test_a_symlinked_key_file_is_read_and_its_target_checked(tmp_path: Path) -> None:
    """Mounted secrets (Kubernetes) are symlinks: followed; the target's mode counts."""
    target = key_file(tmp_path / "target")
    link = tmp_path / "link"
    link.symlink_to(target)
    assert box_of(link).open(box_of(target).seal(SECRET)) == SECRET
    target.chmod(0o644)
    with pytest.raises(SecretKeyError, match="mode 0644"):
        box_of(link)


def test_create_key_file_makes_a_private_key_once(tmp_path: Path) -> None:
    path = tmp_path / "secret-key"
    old_umask = os.umask(0)  # even with a permissive umask
    try:
        assert create_key_file(path) == path
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.read_bytes()
    assert key.endswith(b"\n") and len(key.strip()) == 44
    assert read_key_file(path) == key.strip()
    assert create_key_file(path) == path
    assert path.read_bytes() == key  # kept, never replaced
    assert [p.name for p in tmp_path.iterdir()] == ["secret-key"]  # no temporary left
    # Whatever is there is kept: replacing a key loses what it sealed.
    (tmp_path / "other").write_text("not a key")
    create_key_file(tmp_path / "other")
    assert (tmp_path / "other").read_text() == "not a key"


def test_create_key_file_loses_a_race_by_keeping_the_winner(tmp_path: Path) -> None:
    """The check and the link are apart: a key that appears in between wins."""
    path = tmp_path / "secret-key"
    winner = Fernet.generate_key() + b"\n"
    real_link = os.link

    def someone_else_first(src: str | Path, dst: str | Path) -> None:
        Path(dst).write_bytes(winner)
        real_link(src, dst)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "link", someone_else_first)
        create_key_file(path)
    assert path.read_bytes() == winner
    assert [p.name for p in tmp_path.iterdir()] == ["secret-key"]


def test_secret_settings_never_reach_a_tool() -> None:
    assert is_secret_setting("ACTIONQ_SECRET_KEY_FILE")
    assert is_secret_setting("ACTIONQ_SECRET_KEY_FILE_OLD")
    assert is_secret_setting("actionq_secret_anything")
    assert not is_secret_setting("ACTIONQ_DATA_DIR") and not is_secret_setting("MY_SECRET")
    environ = {"PATH": "/bin", "ACTIONQ_SECRET_KEY_FILE": "/d/secret-key"}
    assert tool_environment(environ, ["ACTIONQ_SECRET_KEY_FILE", "ACTIONQ_*"]) == {"PATH": "/bin"}
    assert tool_env(Settings(), ["ACTIONQ_SECRET_KEY_FILE"], environ) == {"PATH": "/bin"}
