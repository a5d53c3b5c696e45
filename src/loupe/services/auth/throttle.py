"""Login rate limiting, per account and per client address.

Failures are rows in the database (``LoginFailure``), so every server
process and worker sees the same counts. Once an account or an address has
``limit`` failures within ``window``, further logins are refused with
``RATE_LIMITED`` (429) and a ``Retry-After`` of the seconds until the oldest
counted failure leaves the window, whatever the password: a locked account
cannot be brute-forced meanwhile. A successful login clears the account's
failures (not the address's).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from loupe.db.models import LoginFailure
from loupe.db.types import utcnow
from loupe.errors import ErrorCode, LoupeError


@dataclass(frozen=True)
class LoginLimits:
    per_account: int = 10
    per_address: int = 30
    window: dt.timedelta = dt.timedelta(minutes=15)


def _keys(email: str, address: str | None) -> list[tuple[str, str]]:
    keys = [("account", f"account:{email.strip().lower()}"[:400])]
    if address:
        keys.append(("address", f"address:{address}"[:400]))
    return keys


def check(db: Session, email: str, address: str | None, limits: LoginLimits) -> None:
    """Raise ``RATE_LIMITED`` when the account or the address is over its limit."""
    since = utcnow() - limits.window
    for what, key in _keys(email, address):
        limit = limits.per_account if what == "account" else limits.per_address
        count, oldest = db.execute(
            select(func.count(LoginFailure.id), func.min(LoginFailure.at)).where(
                LoginFailure.key == key, LoginFailure.at >= since
            )
        ).one()
        if count >= limit and oldest is not None:
            wait = max(1, math.ceil((oldest + limits.window - utcnow()).total_seconds()))
            raise LoupeError(
                ErrorCode.RATE_LIMITED,
                f"too many failed logins for this {what}; try again in {wait} s",
                retry_after=wait,
            )


def record_failure(db: Session, email: str, address: str | None, limits: LoginLimits) -> None:
    """Count one failed login (and forget failures older than the window)."""
    now = utcnow()
    keys = [key for _, key in _keys(email, address)]
    db.execute(
        delete(LoginFailure).where(
            LoginFailure.key.in_(keys), LoginFailure.at < now - limits.window
        )
    )
    db.add_all(LoginFailure(key=key, at=now) for key in keys)
    db.flush()


def clear_account(db: Session, email: str) -> None:
    """Forget the account's failures after a successful login."""
    key = _keys(email, None)[0][1]
    db.execute(delete(LoginFailure).where(LoginFailure.key == key))
