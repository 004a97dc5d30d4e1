from __future__ import annotations

from typing import Iterator, Optional

import libcst as cst

from ..model import FileModel
from ..rule import Report, Rule
from ..semantic.facts import FunctionInfo
from ..semantic.transactions import only_parameter_reaches
from ..semantic.walk import walk, walk_scope


class ProviderWithoutFinally(Rule):
    """## What it does
    Checks for generator functions (FastAPI dependencies, `@contextmanager` and
    `@asynccontextmanager` functions, pytest fixtures) that yield a session they created
    without a `try`/`finally` or a `with` block around the `yield`.

    ## Why is this bad?
    Code after a bare `yield` runs only when the consumer resumes the generator normally. When
    the request handler, the `with` body or the test raises, the exception is thrown in at the
    `yield` and the `close()` after it never runs; a generator that is garbage collected
    unfinished gets `GeneratorExit` there too. Every failed request then leaks one session and
    its connection, and the pool is exhausted after a burst of errors.

    ## Example
    ```python
    from sqlalchemy.orm import sessionmaker

    SessionLocal = sessionmaker()

    def get_db():
        db = SessionLocal()
        yield db
        db.close()
    ```

    Use instead:
    ```python
    from sqlalchemy.orm import sessionmaker

    SessionLocal = sessionmaker()

    def get_db():
        db = SessionLocal()
        try:
            yield db
        finally:
            db.close()
    ```

    ## Known problems
    pytest fixtures are judged differently: pytest resumes a yield fixture for its teardown
    whatever the test's outcome and never throws the test's exception into it, so a `close()`
    after the `yield` always runs. A pytest fixture is reported only when nothing after its
    `yield` closes the session.

    ## References
    - [pytest: yield fixtures](https://docs.pytest.org/en/stable/how-to/fixtures.html#yield-fixtures-recommended)
    - [FastAPI: dependencies with yield](https://fastapi.tiangolo.com/tutorial/dependencies/dependencies-with-yield/)
    - [contextlib.contextmanager](https://docs.python.org/3/library/contextlib.html#contextlib.contextmanager)
    """

    code = "SES103"
    name = "provider-without-finally"
    message = "`yield {receiver}` is not protected by `try`/`finally` or `with`"
    hint = "Wrap the `yield` in `try:` ... `finally: {receiver}.close()`, or yield inside `with`"

    def check(self, model: FileModel) -> Iterator[Report]:
        for info, life in model.lifecycles():
            params = set(info.summary.params)
            for y in life.yields:
                if y.protected:
                    continue
                if y.receiver in params and only_parameter_reaches(
                        model.graph_index(info), y.receiver, _statement_of(info, y.node)):
                    continue  # `if session: yield session`: the caller's own session, handed back
                yield Report(y.node, {"receiver": y.receiver}, info.node)


def _statement_of(info: FunctionInfo, node: cst.CSTNode) -> Optional[cst.CSTNode]:
    """The small statement (the flow graph's unit) that contains `node`."""
    for n in walk_scope(info.node.body):
        if isinstance(n, cst.SimpleStatementLine):
            for small in n.body:
                if any(inner is node for inner in walk(small)):
                    return small
    return None
