"""Settings from ``LOUPE_*`` environment variables (pydantic-settings).

Secrets fail fast: outside ``loupe demo`` (which sets ``LOUPE_DEMO=1``) a
missing or weak ``LOUPE_SECRET_KEY`` stops the server at start-up.
"""

from __future__ import annotations

import functools
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_MIN_SECRET_LEN = 32


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOUPE_", env_file=None, extra="ignore")

    home: Path = Field(default=Path("./loupe-data"), description="Data folder")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; SQLite in home")
    queue_url: str | None = Field(default=None, description="redis://... for RedisHuey")
    secret_key: str | None = None
    demo: bool = False
    testing: bool = False
    # Run jobs inline in the caller (unit tests); integration tests use a consumer.
    jobs_immediate: bool = False
    allow_registration: bool = True
    session_max_age_s: int = 14 * 24 * 3600
    cookie_secure: bool = False
    max_upload_bytes: int = 2 * 1024**3
    max_pixels: int = 200_000_000
    thumbnail_size: int = 256
    weights: Path | None = None
    worker_threads: int = 1
    queue_name: str = "loupe"
    job_heartbeat_s: float = 10.0

    @model_validator(mode="after")
    def _check_secret(self) -> Settings:
        if self.secret_key is None and (self.demo or self.testing):
            # Demo/test only: a random per-home key, never a constant.
            self.secret_key = _home_secret(self.home)
        if not self.secret_key or len(self.secret_key) < _MIN_SECRET_LEN:
            raise ValueError(
                f"LOUPE_SECRET_KEY must be set to at least {_MIN_SECRET_LEN} random characters "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`); "
                "only `loupe demo` runs without one"
            )
        return self

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'loupe.db').resolve()}"

    @property
    def media_dir(self) -> Path:
        return self.home / "media"

    @property
    def thumbs_dir(self) -> Path:
        return self.home / "thumbs"

    @property
    def features_dir(self) -> Path:
        return self.home / "features"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def exports_dir(self) -> Path:
        return self.home / "exports"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    def ensure_dirs(self) -> None:
        for d in (
            self.home,
            self.media_dir,
            self.thumbs_dir,
            self.features_dir,
            self.models_dir,
            self.exports_dir,
            self.reports_dir,
        ):
            d.mkdir(parents=True, exist_ok=True)


def _home_secret(home: Path) -> str:
    import secrets

    home.mkdir(parents=True, exist_ok=True)
    path = home / ".secret_key"
    if path.exists():
        return path.read_text().strip()
    key = secrets.token_urlsafe(48)
    path.write_text(key)
    path.chmod(0o600)
    return key


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
