"""The secret box: secrets a client hands to actionq (the LLM API key that
OpenHands' RemoteConversation sends with a conversation) are stored sealed
with a server-side key, never in clear.

The key is a Fernet key (AES-128-CBC and HMAC-SHA256, from ``cryptography``)
in the file ``ACTIONQ_SECRET_KEY_FILE``. The API seals; only agent workers,
which call the model, open. Tool workers never get the key file's setting
(``actionq up`` leaves it out of their environment and a worker that runs tools
drops any ``ACTIONQ_SECRET*`` variable, see ``is_secret_setting``), and tools
never get any ``ACTIONQ_*`` variable.

Rotation: ``ACTIONQ_SECRET_KEY_FILE_OLD`` names the previous key file; what it
sealed still opens, new secrets are sealed with the current key, and
``SecretBox.rotate`` re-seals one with it.

No message of this module holds key material or a secret: a key file is named
by its path, a sealed value that does not open by what may be wrong.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from actionq.errors import SecretKeyError
from actionq.settings import ENV_PREFIX, Settings

__all__ = [
    "SEALED_PREFIX",
    "SECRET_SETTING_PREFIX",
    "SecretBox",
    "SecretKeyError",
    "create_key_file",
    "is_secret_setting",
    "read_key_file",
]

# Names the scheme, so that another one can be told apart later.
SEALED_PREFIX = "fernet1:"
# Settings only the API and agent workers may have (ACTIONQ_SECRET_KEY_FILE,
# ..._OLD): never in a tool worker's environment.
SECRET_SETTING_PREFIX = ENV_PREFIX + "SECRET"
# A Fernet key is 44 characters; anything much longer is not one (and is not
# read whole into memory).
_MAX_KEY_FILE_BYTES = 1024
# 32 bytes in url-safe base64: 43 characters and one "=" of padding.
_KEY_FORM = re.compile(rb"[A-Za-z0-9_-]{43}=")
_DOES_NOT_OPEN = (
    "a sealed secret does not open with the secret key: it was sealed with another key "
    "(ACTIONQ_SECRET_KEY_FILE replaced or lost; an old key goes in ACTIONQ_SECRET_KEY_FILE_OLD) "
    "or it is corrupt"
)


def is_secret_setting(name: str) -> bool:
    """Whether the environment variable ``name`` is one that tool workers
    must not have (``ACTIONQ_SECRET*``, in any case)."""
    return name.upper().startswith(SECRET_SETTING_PREFIX)


def read_key_file(path: Path, setting: str = "ACTIONQ_SECRET_KEY_FILE") -> bytes:
    """The Fernet key in ``path``. Refused, as ssh refuses a private key, if
    group or others may read or write the file; refused if it is not a
    regular file or does not hold a Fernet key. ``setting`` names where the
    path came from, for the message."""
    try:
        # O_NOFOLLOW is not used: mounted secrets (Kubernetes) are symlinks.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise SecretKeyError(f"{setting}: cannot read {path}: {e.strerror}") from None
    try:
        # fstat of the opened file: the file checked is the file read.
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SecretKeyError(f"{setting}: {path} is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise SecretKeyError(
                f"{setting}: {path} is accessible by group or others (mode {mode:04o}); "
                f"it must be private to its owner: chmod 600 {path}"
            )
        raw = os.read(fd, _MAX_KEY_FILE_BYTES + 1)
    except OSError as e:
        raise SecretKeyError(f"{setting}: cannot read {path}: {e.strerror}") from None
    finally:
        os.close(fd)
    key = raw.strip()
    # Exactly the form Fernet.generate_key writes: base64 decoding alone would
    # also take a key with anything after its padding.
    if _KEY_FORM.fullmatch(key) is None:
        raise SecretKeyError(
            f"{setting}: {path} does not hold a Fernet key (one line of 44 url-safe base64 "
            "characters, as `actionq up` writes)"
        )
    return key


def create_key_file(path: Path) -> Path:
    """Make ``path`` a new Fernet key file (0600), unless there already is a
    file there: that one is kept whatever it holds (``read_key_file`` checks
    it), since replacing a key loses every secret sealed with it.

    Atomic: the key is written and synced in a temporary file, then linked to
    ``path``, which fails if ``path`` appeared in between (two processes
    racing keep the first key, never one each). The folder is synced too: a
    key lost in a power cut would be every secret lost."""
    if os.path.lexists(path):
        return path
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.write(fd, Fernet.generate_key() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        # FileExistsError: someone else's key won the race; it is the one.
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    return path


class SecretBox:
    """Seals and opens secrets with the server-side key (and, during a
    rotation, opens what the previous key sealed)."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        """``keys``: the current key first (it seals), then older ones (they
        only open). Each a Fernet key, as ``read_key_file`` returns."""
        if not keys:
            raise SecretKeyError("a SecretBox needs at least one key")
        try:
            self._fernet = MultiFernet([Fernet(key) for key in keys])
        except (ValueError, TypeError):
            raise SecretKeyError("a SecretBox key is not a Fernet key") from None

    def __repr__(self) -> str:  # never the keys
        return "SecretBox(...)"

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox | None:
        """The box of ``ACTIONQ_SECRET_KEY_FILE`` (and ``..._OLD``); None when
        no key file is configured. The files are read on each call: a fixed
        key file is picked up without a restart."""
        if not settings.secret_key_file:
            if settings.secret_key_file_old:
                raise SecretKeyError(
                    "ACTIONQ_SECRET_KEY_FILE_OLD is set without ACTIONQ_SECRET_KEY_FILE: "
                    "the old key only opens, a current one is needed to seal"
                )
            return None
        keys = [read_key_file(_path(settings.secret_key_file), "ACTIONQ_SECRET_KEY_FILE")]
        if settings.secret_key_file_old:
            old = _path(settings.secret_key_file_old)
            keys.append(read_key_file(old, "ACTIONQ_SECRET_KEY_FILE_OLD"))
        return cls(keys)

    def seal(self, plaintext: str) -> str:
        """``plaintext`` encrypted and authenticated with the current key:
        ``"fernet1:" + token`` (ASCII; the token also records when it was made)."""
        token = self._fernet.encrypt(plaintext.encode("utf-8"))
        return SEALED_PREFIX + token.decode("ascii")

    def open(self, sealed: str) -> str:
        """The plaintext of a value ``seal`` made with one of this box's keys;
        ``SecretKeyError`` if it was sealed with another key or is corrupt."""
        try:
            return self._fernet.decrypt(_token(sealed)).decode("utf-8")
        except (InvalidToken, UnicodeDecodeError):
            raise SecretKeyError(_DOES_NOT_OPEN) from None

    def rotate(self, sealed: str) -> str:
        """``sealed`` sealed again with the current key (for a rotation: once
        every stored value is re-sealed, the old key can go)."""
        try:
            return SEALED_PREFIX + self._fernet.rotate(_token(sealed)).decode("ascii")
        except InvalidToken:
            raise SecretKeyError(_DOES_NOT_OPEN) from None


def _path(value: str) -> Path:
    return Path(value).expanduser()


def _token(sealed: str) -> bytes:
    if not isinstance(sealed, str) or not sealed.startswith(SEALED_PREFIX):
        raise SecretKeyError(f"not a sealed secret (it does not start with {SEALED_PREFIX!r})")
    try:
        return sealed.removeprefix(SEALED_PREFIX).encode("ascii")
    except UnicodeEncodeError:
        raise SecretKeyError("a sealed secret is corrupt (not ASCII)") from None
