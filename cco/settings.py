"""Process settings from flags and CCO_* variables, typed and validated once at start-up."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec


def default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "cco")


class Settings(msgspec.Struct, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8000
    config_dir: str | None = None
    data_dir: str = msgspec.field(default_factory=default_data_dir)
    log_level: str = "info"
    log_format: str = "text"
    access_log: bool = False
    max_body_bytes: int = 32 * 1024 * 1024
    header_timeout: float = 10.0
    idle_timeout: float = 75.0
    drain_timeout: float = 10.0
    cache_size_mb: float = 500.0
    cache_ttl: float = 3600.0
    no_cache: bool = False
    project: str = "default"

    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser()
