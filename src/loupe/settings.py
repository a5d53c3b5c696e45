"""Settings from ``LOUPE_*`` environment variables (pydantic-settings).

Secrets: without ``LOUPE_SECRET_KEY`` a random key is generated on first use and
kept in ``LOUPE_HOME/.secret_key`` (mode 0600), so ``loupe project create`` /
``ingest`` / ``serve`` work with no environment set and sessions survive a
restart. There is never a constant default, and a weak key that is set stops the
server at start-up.
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
    # Secure cookies; they are also Secure whenever the request came over HTTPS.
    cookie_secure: bool = False
    # Failed logins allowed per account / per client address within the window.
    login_max_failures_per_account: int = 10
    login_max_failures_per_address: int = 30
    login_window_s: int = 15 * 60
    max_upload_bytes: int = 2 * 1024**3
    # Bodies of JSON routes; larger ones get 413 before they are read.
    max_json_bytes: int = 1024**2
    # Label files (CSV, or a ZIP holding labels.csv) sent to the label import.
    max_label_file_bytes: int = 256 * 1024**2
    # Dataset ZIPs: the sum of the members' uncompressed sizes (zip bombs).
    max_unzipped_bytes: int = 10 * 1024**3
    max_pixels: int = 200_000_000
    # Memory one image decode may take, and how many big ones may run at once.
    max_decode_bytes: int = 1024**3
    max_concurrent_decodes: int = 2
    thumbnail_size: int = 256
    weights: Path | None = None
    worker_threads: int = 1
    queue_name: str = "loupe"
    job_heartbeat_s: float = 10.0
    # A running job without a heartbeat for this long is marked failed (worker lost);
    # the web process checks every job_reap_every_s (0: never).
    job_stale_after_s: float = 60.0
    job_reap_every_s: float = 30.0
    # A web process looks at most this often (seconds) at what its kept queue arrays
    # depend on (the project's item count, a version's prediction count); 0: on every
    # queue request. Labels are read fresh on every request regardless.
    queue_recheck_s: float = Field(default=1.0, ge=0.0, le=60.0)

    @model_validator(mode="after")
    def _check_secret(self) -> Settings:
        if self.secret_key is None:
            # A random key per LOUPE_HOME, made once and kept private; never a constant.
            self.secret_key = _home_secret(self.home)
        if len(self.secret_key) < _MIN_SECRET_LEN:
            raise ValueError(
                f"LOUPE_SECRET_KEY must be at least {_MIN_SECRET_LEN} random characters "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`), "
                "or unset to use the key kept in LOUPE_HOME/.secret_key"
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
    """The key in ``home/.secret_key``, created (mode 0600, never readable by
    others even for a moment) when missing; two processes starting at once agree."""
    import os
    import secrets
    import time

    home.mkdir(parents=True, exist_ok=True)
    path = home / ".secret_key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = ""
        for _ in range(50):  # another process may be writing it right now
            key = path.read_text().strip()
            if key:
                break
            time.sleep(0.02)
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        return key
    key = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w") as f:
        f.write(key)
    return key


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
