"""Joining a running ``actionq up``: ``actionq env`` and ``actionq flower``.

Both read what that ``up`` recorded in its data folder: the lock file's record
(settings without secrets) and the 0600 files holding the secrets. ``env``
prints shell ``export`` lines in which every secret is read from its file
when the line is evaluated (``"$(cat FILE)"``), so the secret itself never
appears in the output. ``ACTIONQ_SECRET_KEY_FILE`` is printed: it is a path,
not the key, and an agent worker started from that shell needs it; a tool
worker started with ``actionq worker`` leaves it out of its environment.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from actionq.local.data_folder import DataFolder, UpInfo, read_or_create_secret
from actionq.local.up import SECRET_SETTING_FILES
from actionq.secrets import is_secret_setting

__all__ = ["FLOWER_USER", "env_lines", "exec_flower", "running_up"]

FLOWER_USER = "actionq"


def running_up(data_dir: Path) -> tuple[DataFolder, UpInfo]:
    """The live ``up`` on ``data_dir``, or a one-line error (SystemExit)."""
    folder = DataFolder(data_dir)
    info = folder.holder()
    if info is None or not info.is_running():
        raise SystemExit(
            f"actionq: no actionq up is running on {folder.path} (start one with "
            f"`actionq up --data-dir {folder.path}`)"
        )
    return folder, info


def _secret_files(folder: DataFolder) -> dict[str, Path]:
    files = {name: folder.path / file for name, file in SECRET_SETTING_FILES.items()}
    files["ACTIONQ_API_KEY"] = folder.path / "api-key"
    return {name: path for name, path in files.items() if path.exists()}


def env_lines(data_dir: Path) -> list[str]:
    """``export`` lines for ``eval "$(actionq env)"``."""
    folder, info = running_up(data_dir)
    lines = [f"# actionq up on {folder.path} (pid {info.pid}, API {info.api_url})"]
    for name, value in sorted(info.settings.items()):
        lines.append(f"export {name}={shlex.quote(value)}")
    lines.append(f"export ACTIONQ_API_URL={shlex.quote(info.api_url)}")
    for name, path in sorted(_secret_files(folder).items()):
        lines.append(f'export {name}="$(cat {shlex.quote(str(path))})"')
    if "ACTIONQ_API_KEY" not in _secret_files(folder):
        lines.append("# ACTIONQ_API_KEY: one of the ACTIONQ_API_KEYS that `up` was given")
    return lines


def exec_flower(data_dir: Path, address: str, port: int) -> None:
    """Replace this process by Flower on the running up's broker, behind basic
    auth (user ``actionq``, password in a 0600 file of the data folder). The
    credentials go by environment (FLOWER_BASIC_AUTH), not the command line."""
    folder, info = running_up(data_dir)
    password_file = folder.path / "flower.password"
    password = read_or_create_secret(password_file, 24)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONQ_")}
    # Flower opens no sealed secret: not even the secret key file's path.
    env |= {k: v for k, v in info.settings.items() if not is_secret_setting(k)}
    for name, path in _secret_files(folder).items():
        if name != "ACTIONQ_API_KEY":
            env[name] = path.read_text(encoding="utf-8").strip()
    env["FLOWER_BASIC_AUTH"] = f"{FLOWER_USER}:{password}"
    print(
        f"Flower on http://{address}:{port}  (user {FLOWER_USER}, password in {password_file})",
        flush=True,
    )
    command = [sys.executable, "-m", "celery", "-A", "actionq", "flower"]
    command += [f"--address={address}", f"--port={port}"]
    os.execve(sys.executable, command, env)
