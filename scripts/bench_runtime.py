"""Overhead of the runtime checker: 20 000 ORM operations on SQLite, with and without watch().

    python scripts/bench_runtime.py [--ops 20000] [--runs 5]

Prints the median time of each and their ratio (the budget is 1.15). Both variants run in the
same process, interleaved, so machine noise hits them alike. Operations: ``add``, ``flush``,
``get`` (identity map and database), ``execute`` of a select, attribute updates and
``commit``, across sessions of 200 operations each, plus async sessions on aiosqlite when it
is installed.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Callable, List

from sqlalchemy import String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker


class Base(DeclarativeBase):
    pass


class Row(Base):
    __tablename__ = "rows"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40))
    value: Mapped[int] = mapped_column(default=0)


PER_SESSION = 200


def sync_batch(factory: sessionmaker[Session], ids: List[int]) -> int:
    with factory() as session:
        for i in ids:
            session.add(Row(id=i, name=f"r{i}"))
        session.flush()
        for i in ids:
            session.get(Row, i).value += 1  # identity map
        session.commit()
        for i in ids:
            session.get(Row, i)  # expired by the commit: a SELECT each
        for i in ids:
            session.execute(select(Row.value).where(Row.id == i)).scalar_one()
        session.commit()
    return 5 * len(ids)


def sync_workload(ops: int) -> Callable[[], None]:
    def run() -> None:
        engine = create_engine("sqlite://")
        Base.metadata.create_all(engine)
        factory = sessionmaker(engine)
        done, batch = 0, PER_SESSION // 5
        while done < ops:
            done += sync_batch(factory, list(range(done + 1, done + 1 + batch)))
        engine.dispose()
    return run


async def async_batch(factory: object, ids: List[int]) -> int:
    async with factory() as session:  # type: ignore[operator]
        session.add_all([Row(id=i, name=f"r{i}") for i in ids])
        await session.flush()
        for i in ids:
            await session.get(Row, i)
        for i in ids:
            await session.execute(select(Row.value).where(Row.id == i))
        await session.commit()
    return 3 * len(ids) + 1


def async_workload(ops: int) -> Callable[[], None]:
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    async def main() -> None:
        engine = create_async_engine("sqlite+aiosqlite://")
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        factory = async_sessionmaker(engine)
        done, next_id, batch = 0, 1, PER_SESSION // 4
        while done < ops:
            done += await async_batch(factory, list(range(next_id, next_id + batch)))
            next_id += batch
        await engine.dispose()

    return lambda: asyncio.run(main())


def measure(fn: Callable[[], None], runs: int) -> tuple[float, float]:
    from sessionlint.runtime import watch

    plain: List[float] = []
    watched: List[float] = []
    fn()  # warm up imports and caches
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        plain.append(time.perf_counter() - start)
        start = time.perf_counter()
        with watch():
            fn()
        watched.append(time.perf_counter() - start)
    return statistics.median(plain), statistics.median(watched)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    workloads = [("sync", sync_workload(args.ops))]
    try:
        import aiosqlite  # noqa: F401
        workloads.append(("asyncio", async_workload(args.ops)))
    except ImportError:
        pass
    for name, fn in workloads:
        plain, watched = measure(fn, args.runs)
        print(f"{name:8} {args.ops} ops  plain {plain:.3f}s  watched {watched:.3f}s  ratio {watched / plain:.3f}")


if __name__ == "__main__":
    main()
