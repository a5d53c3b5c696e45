"""SQLite writers of one process queue on a lock (db/session.py ``_Writers``).

The lock must be given back on every way a transaction ends, or the next
writer would wait the full 30 s: each check below runs the next write in a
thread and requires it to finish well before that.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from loupe.db.session import get_engine, session_scope


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    with session_scope(url) as db:
        db.execute(text("CREATE TABLE t (x INTEGER)"))
    return url


def _write_in_thread(url: str, value: int) -> bool:
    done = threading.Event()

    def work() -> None:
        with session_scope(url) as db:
            db.execute(text("INSERT INTO t VALUES (:x)"), {"x": value})
        done.set()

    threading.Thread(target=work, daemon=True).start()
    return done.wait(timeout=10)


def _count(url: str) -> int:
    with session_scope(url, write=False) as db:
        return int(db.execute(text("SELECT count(*) FROM t")).scalar_one())


def test_concurrent_writers_all_land(url: str) -> None:
    def work(k: int) -> None:
        for i in range(50):
            with session_scope(url) as db:
                db.execute(text("INSERT INTO t VALUES (:x)"), {"x": k * 1000 + i})

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert _count(url) == 200


def test_a_failed_transaction_gives_the_lock_back(url: str) -> None:
    with pytest.raises(RuntimeError), session_scope(url) as db:
        db.execute(text("INSERT INTO t VALUES (1)"))
        raise RuntimeError("the request failed")
    assert _write_in_thread(url, 2)
    assert _count(url) == 1  # the failed one rolled back


def test_a_connection_used_for_two_write_transactions(url: str) -> None:
    engine = get_engine(url).execution_options(sqlite_begin="immediate")
    with engine.connect() as conn:
        with conn.begin():
            conn.execute(text("INSERT INTO t VALUES (1)"))
        with conn.begin():  # same connection: must not wait for itself
            conn.execute(text("INSERT INTO t VALUES (2)"))
        assert _write_in_thread(url, 3)  # released after each commit, not at checkin
    assert _count(url) == 3


def test_readers_do_not_take_the_writer_lock(url: str) -> None:
    with session_scope(url, write=False) as reader:
        reader.execute(text("SELECT count(*) FROM t")).scalar_one()
        assert _write_in_thread(url, 1)  # a reader's open transaction blocks no writer
    assert _count(url) == 1
