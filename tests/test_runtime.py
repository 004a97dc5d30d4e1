"""The runtime checker: each detector fires on a minimal misuse and stays quiet on the fix."""
from __future__ import annotations

import asyncio
import gc
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, List

import pytest

pytest.importorskip("sqlalchemy", minversion="2.0")
from sqlalchemy import String, create_engine, event, select, text  # noqa: E402
from sqlalchemy.exc import IntegrityError, PendingRollbackError  # noqa: E402
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, scoped_session, sessionmaker  # noqa: E402
from sqlalchemy.orm.exc import DetachedInstanceError  # noqa: E402
from sqlalchemy.pool import StaticPool  # noqa: E402

from sessionlint.runtime import SessionMisuseError, SessionMisuseWarning, watch  # noqa: E402
from sessionlint.runtime.hub import HUB  # noqa: E402


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)


@pytest.fixture
def factory() -> Iterator[sessionmaker[Session]]:
    engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
    Base.metadata.create_all(engine)
    yield sessionmaker(engine)
    engine.dispose()


def codes(fn: Callable[[], object], **options: object) -> List[str]:
    """Run ``fn`` under watch() and return the codes of the warnings it issued."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with watch(**options):  # type: ignore[arg-type]
            try:
                fn()
            except (PendingRollbackError, DetachedInstanceError):
                pass
        gc.collect()
    return sorted(w.message.code for w in caught if isinstance(w.message, SessionMisuseWarning))


# -- SES101 ---------------------------------------------------------------------------------
def test_leaked_session_is_reported_with_its_creation_line(factory) -> None:
    def leak() -> None:
        session = factory()
        session.execute(text("select 1"))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with watch():
            leak()
    (warning,) = [w.message for w in caught if isinstance(w.message, SessionMisuseWarning)]
    assert warning.code == "SES101"
    assert warning.finding.site.function.endswith("leak")
    assert warning.finding.site.path == __file__
    assert warning.finding.site.line == leak.__code__.co_firstlineno + 1


def test_closed_or_unused_sessions_are_not_leaks(factory) -> None:
    def fine() -> None:
        with factory() as session:
            session.execute(text("select 1"))
        session = factory()
        try:
            session.execute(text("select 1"))
        finally:
            session.close()
        factory()  # never ran SQL: holds no connection
        with factory.begin() as session:
            session.add(Item(name="x"))

    assert codes(fine) == []


def test_leaked_connection_is_reported(factory) -> None:
    engine = factory.kw["bind"]
    held = []

    def leak() -> None:
        held.append(engine.connect())

    def fine() -> None:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        with engine.begin() as conn:
            conn.execute(text("select 1"))

    assert codes(leak) == ["SES101"]
    held[0].close()
    assert codes(fine) == []


def test_connection_returned_by_the_garbage_collector_is_a_leak(factory) -> None:
    engine = create_engine("sqlite://")

    def leak() -> int:
        conn = engine.connect()
        return conn.execute(text("select 1")).scalar_one()

    def run() -> None:
        leak()
        gc.collect()

    assert codes(run) == ["SES101"]
    engine.dispose()


# -- SES201 ---------------------------------------------------------------------------------
def test_commit_per_iteration_is_reported_above_the_threshold(factory) -> None:
    def per_row(n: int, tag: str) -> None:
        with factory() as session:
            for i in range(n):
                session.add(Item(name=f"{tag}-{i}"))
                session.commit()

    assert codes(lambda: per_row(4, "a")) == ["SES201"]
    assert codes(lambda: per_row(3, "b")) == []
    assert codes(lambda: per_row(3, "c"), commit_threshold=2) == ["SES201"]


def test_one_commit_per_call_of_a_helper_is_not_a_loop(factory) -> None:
    def save(session: Session, i: int) -> None:
        session.add(Item(name=f"s{i}"))
        session.commit()

    def run() -> None:
        with factory() as session:
            for i in range(10):
                save(session, i)

    assert codes(run) == []


# -- SES202 ---------------------------------------------------------------------------------
def test_use_after_failed_flush_without_rollback(factory) -> None:
    def swallow(recover: bool) -> None:
        with factory() as session:
            for name in ("a", "a", "b"):
                session.add(Item(name=name))
                try:
                    session.flush()
                except IntegrityError:
                    if recover:
                        session.rollback()

    assert codes(lambda: swallow(False)) == ["SES202"]
    assert codes(lambda: swallow(True)) == []


def test_failed_flush_inside_a_savepoint_is_recovered(factory) -> None:
    def run() -> None:
        with factory() as session:
            for name in ("a", "a", "b"):
                try:
                    with session.begin_nested():
                        session.add(Item(name=name))
                except IntegrityError:
                    pass
            session.commit()

    assert codes(run) == []


# -- SES106 ---------------------------------------------------------------------------------
def test_detached_instance_error_names_creation_and_close(factory) -> None:
    with factory.begin() as session:
        session.add(Item(name="d"))

    def read(expire: bool) -> str:
        with factory(expire_on_commit=expire) as session:
            item = session.scalars(select(Item)).one()
            session.commit()
        return item.name

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with watch():
            with pytest.raises(DetachedInstanceError):
                read(True)
            assert read(False) == "d"
    (warning,) = [w.message for w in caught if isinstance(w.message, SessionMisuseWarning)]
    assert warning.code == "SES106"
    roles = [role for role, _ in warning.finding.related]
    assert roles == ["session created", "session closed"]


# -- SES301 / SES302 ------------------------------------------------------------------------
SLOW_QUERY = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) "
              "SELECT count(*) FROM c")


def test_session_shared_by_threads(factory) -> None:
    def shared() -> None:
        # deterministic overlap: the worker is inside a slow query (sqlite3 releases the GIL)
        # when this thread calls the session again
        with factory() as session:
            session.execute(text("select 1"))
            inside = threading.Event()

            def slow() -> None:
                inside.set()
                try:
                    session.execute(text(SLOW_QUERY))
                except Exception:  # the driver may refuse the concurrent use too
                    pass

            worker = threading.Thread(target=slow)
            worker.start()
            inside.wait()
            time.sleep(0.05)
            try:
                session.execute(text("select 1"))
            except Exception:
                pass
            worker.join()

    def own() -> None:
        def work(_: int) -> None:
            with factory() as session:
                session.execute(text("select 1"))

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(work, range(4)))

    assert codes(shared) == ["SES301"]
    assert codes(own) == []


def test_scoped_session_gives_each_thread_its_own(factory) -> None:
    registry = scoped_session(factory)

    def work() -> None:
        registry.execute(text("select 1"))
        registry.remove()

    def run() -> None:
        threads = [threading.Thread(target=work) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    assert codes(run) == []


def test_close_from_another_thread_after_use_is_not_sharing(factory) -> None:
    # FastAPI runs a sync dependency's teardown in another worker thread than the endpoint.
    def run() -> None:
        session = factory()
        t = threading.Thread(target=lambda: session.execute(text("select 1")))
        t.start()
        t.join()
        session.close()

    assert codes(run) == []


aiosqlite = pytest.importorskip("aiosqlite")


def _async_factory():
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    return async_sessionmaker(create_async_engine("sqlite+aiosqlite://"))


def arun(factory, fn):
    """Run ``fn()`` in a new event loop, then dispose of the engine in that same loop."""
    async def main():
        try:
            return await fn()
        finally:
            await factory.kw["bind"].dispose()
    return asyncio.run(main())


def test_async_session_shared_by_gathered_tasks() -> None:
    factory = _async_factory()

    async def query(session) -> None:
        await session.execute(text("select 1"))

    async def shared() -> None:
        session = factory()
        try:
            # SQLAlchemy itself may refuse the second call: let both tasks finish first.
            await asyncio.gather(query(session), query(session), return_exceptions=True)
        finally:
            await session.close()

    async def own() -> None:
        async def one() -> None:
            async with factory() as session:
                await query(session)

        await asyncio.gather(one(), one())

    async def sequential() -> None:
        async with factory() as session:
            await query(session)
            await query(session)
            await session.commit()

    assert codes(lambda: arun(factory, shared)) == ["SES302"]
    assert codes(lambda: arun(factory, own)) == []
    assert codes(lambda: arun(factory, sequential)) == []


def test_async_leak_and_site_across_the_greenlet() -> None:
    factory = _async_factory()

    async def leak():
        session = factory()
        await session.execute(text("select 1"))
        return session

    async def main():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with watch():
                session = await leak()
            await session.close()
        return [w.message for w in caught if isinstance(w.message, SessionMisuseWarning)]

    (warning,) = arun(factory, main)
    assert warning.code == "SES101"
    assert warning.finding.site.line == leak.__code__.co_firstlineno + 1


def test_async_commit_in_loop_is_attributed_to_the_awaiting_line() -> None:
    factory = _async_factory()

    async def per_row() -> None:
        async with factory() as session:
            for _ in range(5):
                await session.execute(text("select 1"))
                await session.commit()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with watch():
            arun(factory, per_row)
    (warning,) = [w.message for w in caught if isinstance(w.message, SessionMisuseWarning)]
    assert warning.code == "SES201"
    assert warning.finding.site.line == per_row.__code__.co_firstlineno + 4


# -- watch() itself ---------------------------------------------------------------------------
def test_watch_removes_every_hook() -> None:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.pool import Pool

    before = {name: Session.__dict__.get(name) for name in ("__init__", "commit", "close", "execute")}
    async_init = AsyncSession.__dict__.get("__init__")
    with watch():
        assert Session.__dict__["commit"] is not before["commit"]
        assert event.contains(Session, "after_begin", HUB._patches._events[0][2])
        listeners = list(HUB._patches._events)
    assert {name: Session.__dict__.get(name) for name in before} == before
    assert AsyncSession.__dict__.get("__init__") is async_init
    assert "__init__" not in DetachedInstanceError.__dict__
    for target, name, fn in listeners:
        assert not event.contains(target, name, fn)
    assert not HUB.installed
    assert Pool  # imported for the listener targets above


def test_nested_watchers_share_the_hooks(factory) -> None:
    with watch() as outer:
        with watch() as inner:
            assert HUB.installed
        assert HUB.installed
        s = factory()
        s.execute(text("select 1"))
        s.close()
    assert not HUB.installed
    assert outer.findings == [] and inner.findings == []


def test_strict_watch_raises_at_the_end_of_the_block(factory) -> None:
    with pytest.raises(SessionMisuseError) as info:
        with watch(strict=True):
            factory().execute(text("select 1"))
    assert info.value.code == "SES101"
    assert len(info.value.findings) == 1


def test_watch_as_decorator(factory) -> None:
    @watch(strict=True)
    def job() -> None:
        factory().execute(text("select 1"))

    with pytest.raises(SessionMisuseError):
        job()

    @watch(strict=True)
    async def async_job() -> None:
        with factory() as session:
            session.execute(text("select 1"))

    asyncio.run(async_job())


def test_commit_threshold_is_validated() -> None:
    with pytest.raises(ValueError):
        watch(commit_threshold=0)


# -- regressions from the runtime red-team -----------------------------------------------------
def test_joined_thread_hand_off_is_sequential_not_shared(factory) -> None:
    def run() -> None:
        with factory() as session:
            session.execute(text("select 1"))
            t = threading.Thread(target=lambda: session.execute(text("select 2")))
            t.start()
            t.join()
            session.execute(text("select 3"))
            session.commit()

    assert codes(run) == []


def test_awaited_task_between_uses_is_not_sharing() -> None:
    factory = _async_factory()

    async def run() -> None:
        async with factory() as session:
            await session.execute(text("select 1"))
            await asyncio.create_task(session.execute(text("select 2")))
            await asyncio.wait_for(session.execute(text("select 3")), timeout=5)
            await session.commit()

    assert codes(lambda: arun(factory, run)) == []


def test_registry_sessions_belong_to_the_outermost_scope(factory) -> None:
    registry = scoped_session(factory)
    with watch() as outer:
        with watch() as inner:
            registry.execute(text("select 1"))  # made on demand by the registry
        assert inner.findings == []
        registry.remove()
    assert outer.findings == []


def test_inner_leak_is_not_the_outer_blocks(factory) -> None:
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        with watch() as outer:
            with watch() as inner:
                session = factory()
                session.execute(text("select 1"))
            session.close()
    assert [f.code for f in inner.findings] == ["SES101"]
    assert outer.findings == []


def test_batched_commits_are_not_per_iteration(factory) -> None:
    def run() -> None:
        with factory() as session:
            for i in range(100):
                session.add(Item(name=f"batch-{i}"))
                if i % 20 == 19:
                    session.commit()

    assert codes(run) == []


def test_detached_connection_is_not_a_leak(factory) -> None:
    engine = create_engine("sqlite://")

    def run() -> None:
        conn = engine.connect()
        conn.detach()
        conn.close()

    assert codes(run) == []
    engine.dispose()


def test_commit_through_a_session_subclass_counts_the_callers_line() -> None:
    class AuditedSession(Session):
        def commit(self) -> None:
            super().commit()

    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    Audited = sessionmaker(engine, class_=AuditedSession)

    def run() -> None:
        with Audited() as session:
            for i in range(5):
                session.add(Item(name=f"sub-{i}"))
                session.commit()

    assert codes(run) == ["SES201"]
    engine.dispose()


def test_static_pool_leak_survives_a_later_clean_checkout() -> None:
    engine = create_engine("sqlite://", poolclass=StaticPool)
    held = []

    def run() -> None:
        held.append(engine.connect())
        with engine.connect() as conn:
            conn.execute(text("select 1"))

    assert codes(run) == ["SES101"]
    held[0].close()
    engine.dispose()


def test_async_close_site_is_user_code_or_nothing() -> None:
    factory = _async_factory()

    async def read():
        from sqlalchemy.orm.exc import DetachedInstanceError as Detached

        async with factory() as session:
            await session.run_sync(lambda s: Base.metadata.create_all(s.connection()))
            session.add(Item(name="a"))
            await session.commit()
            item = await session.get(Item, 1)
            await session.commit()
        try:
            return item.name
        except Detached:
            return None

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with watch():
            arun(factory, read)
    (warning,) = [w.message for w in caught if isinstance(w.message, SessionMisuseWarning)]
    assert warning.code == "SES106"
    assert all("asyncio" not in site.path for _, site in warning.finding.related)


def test_listeners_linger_inert_while_other_threads_run(factory) -> None:
    # removing SQLAlchemy listeners while another thread dispatches events breaks that thread
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        with watch():
            listeners = list(HUB._patches._events)
        assert not hasattr(Session.commit, "__wrapped__")  # the wrappers are gone at once
        assert all(event.contains(target, name, fn) for target, name, fn in listeners)
        assert codes(lambda: None) == []  # a new watch() wakes the same listeners
        with factory() as session:  # inert: nothing is recorded, nothing breaks
            session.execute(text("select 1"))
            session.commit()
    finally:
        stop.set()
        other.join()
    for thread in threading.enumerate():  # earlier tests' driver threads may still be winding down
        if thread is not threading.main_thread():
            thread.join(timeout=5)
    if threading.active_count() > 1:
        pytest.skip("another thread keeps running; the listeners rightly stay")
    with watch():
        pass
    assert not any(event.contains(target, name, fn) for target, name, fn in listeners)
