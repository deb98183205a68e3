"""Model profiles: which model a conversation talks to, where, and the NAME of
the environment variable that holds its API key (never the key itself).

The ``default`` profile comes from ``ACTIONQ_MODEL`` (with ``ACTIONQ_MODEL_BASE_URL``
and ``ACTIONQ_MODEL_API_KEY_ENV``); more come from the JSON file
``ACTIONQ_MODEL_PROFILES_FILE``::

    {"fast": {"model": "openai/gpt-4o-mini", "api_key_env": "OPENAI_API_KEY"},
     "local": {"model": "openai/qwen", "base_url": "http://127.0.0.1:8080/v1",
               "api_key_env": "LOCAL_MODEL_KEY"}}

Only agent workers read the keys; ``model_key_env_names`` lists every key
variable so that tools never get one (``actionq.tasks.execution``).
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from actionq.errors import ConfigurationError
from actionq.settings import Settings

__all__ = [
    "DEFAULT_PROFILE",
    "ModelProfile",
    "load_profiles",
    "model_key_env_names",
    "resolve_profile",
]

DEFAULT_PROFILE = "default"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FILE_SETTING = "ACTIONQ_MODEL_PROFILES_FILE"
# The setting behind each field of the ``default`` profile.
_DEFAULT_SETTINGS = {
    "model": "ACTIONQ_MODEL",
    "base_url": "ACTIONQ_MODEL_BASE_URL",
    "api_key_env": "ACTIONQ_MODEL_API_KEY_ENV",
}


class ModelProfile(BaseModel):
    """One model: its litellm name (``openai/gpt-4o-mini``), an optional API base
    URL, and the name of the environment variable holding its key (None: no
    key is passed, litellm's provider defaults apply)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    model: str = Field(min_length=1)
    base_url: str | None = None
    api_key_env: str | None = None

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError(
                "a profile name is 1-64 letters, digits, '_', '.' or '-', starting with a "
                "letter or digit"
            )
        return name

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, name: str | None) -> str | None:
        # The message never repeats the value: a key pasted here by mistake
        # must not end up in a log.
        if name is not None and not _ENV_NAME.match(name):
            raise ValueError(
                "api_key_env is the NAME of an environment variable (letters, digits, '_'), "
                "not a key"
            )
        return name


def _problem(error: ValidationError) -> str:
    """The first problem of a profile, without echoing any value."""
    detail = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in detail["loc"])
    message = str(detail["msg"]).removeprefix("Value error, ")
    if detail["type"] == "extra_forbidden" and where == "api_key":
        message = "keys do not go in the profiles file; name their variable in api_key_env"
    return f"{where}: {message}" if where else message


def _profile(name: str, fields: Any) -> ModelProfile:
    if not isinstance(fields, dict):
        raise ValueError(f"profile {name!r} is not a JSON object")
    try:
        return ModelProfile(name=name, **{k: v for k, v in fields.items() if k != "name"})
    except ValidationError as e:
        raise ValueError(f"profile {name!r}: {_problem(e)}") from None
    except TypeError:  # a non-string key
        raise ValueError(f"profile {name!r} has a key that is not a string") from None


@lru_cache(maxsize=8)
def _read_file(path: str, mtime_ns: int, size: int) -> dict[str, ModelProfile]:
    """The profiles of a file, parsed once per version of it (``mtime_ns`` and
    ``size`` are the cache key: an edited file is read again)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigurationError(
            f"{_FILE_SETTING}={path!r}: not valid JSON (line {e.lineno}, column {e.colno})"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigurationError(f"{_FILE_SETTING}={path!r}: cannot read it ({e})") from None
    if not isinstance(data, dict):
        raise ConfigurationError(
            f'{_FILE_SETTING}={path!r}: expected a JSON object {{"name": {{"model": ...}}}}'
        )
    try:
        return {name: _profile(name, fields) for name, fields in data.items()}
    except ValueError as e:
        raise ConfigurationError(f"{_FILE_SETTING}={path!r}: {e}") from None


def _file_profiles(path: str) -> dict[str, ModelProfile]:
    try:
        stat = os.stat(path)
    except OSError as e:
        raise ConfigurationError(
            f"{_FILE_SETTING}={path!r}: cannot read it ({e.strerror or e})"
        ) from None
    return _read_file(path, stat.st_mtime_ns, stat.st_size)


def load_profiles(settings: Settings) -> dict[str, ModelProfile]:
    """Every profile: ``default`` (when ``ACTIONQ_MODEL`` is set) and the file's.
    A bad file, or a ``default`` defined in both places, is a ``ConfigurationError``."""
    profiles: dict[str, ModelProfile] = {}
    if settings.model:
        try:
            profiles[DEFAULT_PROFILE] = ModelProfile(
                name=DEFAULT_PROFILE,
                model=settings.model,
                base_url=settings.model_base_url,
                api_key_env=settings.model_api_key_env,
            )
        except ValidationError as e:
            detail = e.errors(include_url=False)[0]
            setting = _DEFAULT_SETTINGS.get(str(detail["loc"][0]), "ACTIONQ_MODEL")
            message = str(detail["msg"]).removeprefix("Value error, ")
            raise ConfigurationError(f"{setting}: {message}") from None
    if settings.model_profiles_file:
        from_file = _file_profiles(settings.model_profiles_file)
        if DEFAULT_PROFILE in from_file and DEFAULT_PROFILE in profiles:
            raise ConfigurationError(
                f"the {DEFAULT_PROFILE!r} profile is defined both by ACTIONQ_MODEL and in "
                f"{_FILE_SETTING}={settings.model_profiles_file!r}; keep one"
            )
        profiles.update(from_file)
    return profiles


def resolve_profile(settings: Settings, name: str | None = None) -> ModelProfile:
    """The profile called ``name`` (None: ``default``); an unknown name is a
    ``ConfigurationError`` that lists the known ones."""
    wanted = name or DEFAULT_PROFILE
    profiles = load_profiles(settings)
    if wanted in profiles:
        return profiles[wanted]
    if not profiles:
        raise ConfigurationError(
            f"no model profile {wanted!r}: no model is configured (set ACTIONQ_MODEL, or "
            f"{_FILE_SETTING})"
        )
    known = ", ".join(sorted(profiles))
    hint = " (set ACTIONQ_MODEL for it)" if wanted == DEFAULT_PROFILE else ""
    raise ConfigurationError(f"no model profile {wanted!r}{hint}; known: {known}")


def model_key_env_names(settings: Settings) -> frozenset[str]:
    """The environment variables that hold model API keys: every profile's
    ``api_key_env``, and ``ACTIONQ_MODEL_API_KEY_ENV`` even when no model is set
    (it is the variable the ``default`` profile would read)."""
    names = {settings.model_api_key_env}
    names.update(
        p.api_key_env for p in load_profiles(settings).values() if p.api_key_env is not None
    )
    return frozenset(names)
