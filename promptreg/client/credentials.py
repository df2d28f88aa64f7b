"""Where ``promptreg login`` keeps tokens: ``$XDG_CONFIG_HOME/promptreg/credentials.json`` (default
``~/.config/promptreg/``), one token per server URL.

Invariants: the file is created with mode 0600 inside a 0700 folder and replaced atomically (a
reader sees the old or the new file, never half of one); a file another user can read is refused
rather than used; a token is never printed, logged or put in an error message.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from promptreg.errors import InputError

FILE_NAME = "credentials.json"


def config_dir(env: dict[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "promptreg"


def credentials_path(env: dict[str, str] | None = None) -> Path:
    return config_dir(env) / FILE_NAME


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise InputError(f"invalid server URL {url!r}: expected http(s)://host[:port]")
    return url


def _read(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InputError(f"{path} is readable by other users (mode {stat.S_IMODE(mode):o}): "
                         "run `chmod 600` on it or `promptreg login` again")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise InputError(f"{path} is not valid JSON: run `promptreg login` again") from None
    return {k: v for k, v in (data.get("tokens") or {}).items() if isinstance(k, str) and isinstance(v, str)}


def load_token(url: str, env: dict[str, str] | None = None) -> str | None:
    return _read(credentials_path(env)).get(normalize_url(url))


def _write(path: Path, tokens: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"tokens": tokens}, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_token(url: str, token: str, env: dict[str, str] | None = None) -> Path:
    path = credentials_path(env)
    tokens = _read(path)
    tokens[normalize_url(url)] = token
    _write(path, tokens)
    return path


def remove_token(url: str, env: dict[str, str] | None = None) -> bool:
    path = credentials_path(env)
    tokens = _read(path)
    if tokens.pop(normalize_url(url), None) is None:
        return False
    _write(path, tokens)
    return True


__all__ = ["config_dir", "credentials_path", "load_token", "normalize_url", "remove_token", "save_token"]
