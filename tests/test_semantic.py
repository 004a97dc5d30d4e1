"""The semantic layer on its own: what names resolve to, and what the flow graph says."""
from __future__ import annotations

import libcst as cst
import pytest

from sessionlint.parsing import Parsed, parse_source
from sessionlint.semantic import cfg
from sessionlint.semantic.index import ProjectIndex, Scope
from sessionlint.semantic.values import Kind, Own

HEADER = """\
import requests, aiohttp, boto3
import sqlalchemy.orm as orm
from typing import Annotated, Optional
from flask import session as flask_session
from fastapi import Depends
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker, scoped_session
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from flask_sqlalchemy import SQLAlchemy

engine = create_engine("sqlite://")
Factory = sessionmaker(bind=engine)
AsyncFactory = async_sessionmaker()
Registry = scoped_session(Factory)
db = SQLAlchemy()
SessionDep = Annotated[Session, Depends(object)]

def new_session():
    return Factory()

def f(a: Session, b: Optional["Session"], c: SessionDep, d, e: "orm.Session | None"):
    pass
"""


@pytest.fixture(scope="module")
def index() -> tuple[ProjectIndex, Parsed]:
    parsed = parse_source("m.py", HEADER, "m", False)
    assert isinstance(parsed, Parsed)
    return ProjectIndex([parsed.summary]), parsed


@pytest.mark.parametrize("expr, kind, own", [
    ("Session(engine)", Kind.SESSION, Own.OWNED),
    ("orm.Session()", Kind.SESSION, Own.OWNED),
    ("Factory()", Kind.SESSION, Own.OWNED),
    ("AsyncFactory()", Kind.SESSION, Own.OWNED),
    ("Factory.begin()", Kind.SESSION, Own.MANAGED),
    ("Registry()", Kind.SESSION, Own.SCOPED),
    ("db.session", Kind.REGISTRY, Own.SCOPED),
    ("engine.connect()", Kind.CONNECTION, Own.OWNED),
    ("db.engine.connect()", Kind.CONNECTION, Own.OWNED),
    ("new_session()", Kind.SESSION, Own.OWNED),
    ("Session(bind=engine.connect())", Kind.SESSION, Own.BORROWED),
])
def test_values(index, expr: str, kind: Kind, own: Own) -> None:
    idx, _ = index
    value = idx.eval(cst.parse_expression(expr), Scope("m"))
    assert value is not None and value.kind is kind and value.own is own


@pytest.mark.parametrize("expr", ["requests.Session()", "aiohttp.ClientSession()", "flask_session",
                                  "boto3.session.Session()", "session", "Registry.remove()"])
def test_not_sessions(index, expr: str) -> None:
    idx, _ = index
    value = idx.eval(cst.parse_expression(expr), Scope("m"))
    assert value is None or not value.is_session_like


@pytest.mark.parametrize("param, borrowed", [("a", True), ("b", True), ("c", True), ("d", False), ("e", True)])
def test_parameter_annotations(index, param: str, borrowed: bool) -> None:
    idx, _ = index
    value = idx.lookup(param, Scope("m", "f"))
    assert (value is not None and value.kind is Kind.SESSION and value.own is Own.BORROWED) is borrowed


def _graph(src: str) -> cfg.CFG:
    func = cst.parse_module(src).body[0]
    assert isinstance(func, cst.FunctionDef)
    return cfg.build(func)


def test_finally_is_copied_per_way_out() -> None:
    graph = _graph("def f(x):\n    try:\n        if x:\n            return 1\n        g()\n    finally:\n"
                   "        h()\n")
    copies = [n for n in graph.nodes if n.kind == cfg.STMT and cst.Module([]).code_for_node(n.ast) == "h()"]
    # fall-through, return, and the exception from g() each run their own copy
    assert len(copies) == 3


def test_exception_edges_only_from_statements_that_may_raise() -> None:
    graph = _graph("def f():\n    x = 1\n    y = g()\n")
    raising = [n for n in graph.nodes if any(label == cfg.EXC for _, label in n.succ)]
    assert [cst.Module([]).code_for_node(n.ast) for n in raising] == ["y = g()"]


def test_specific_handler_lets_other_exceptions_through() -> None:
    graph = _graph("def f():\n    try:\n        g()\n    except KeyError:\n        pass\n")
    preds = {nid for n in graph.nodes for nid, _ in n.succ}
    assert graph.raise_exit in preds
    graph = _graph("def f():\n    try:\n        g()\n    except Exception:\n        pass\n")
    preds = {nid for n in graph.nodes for nid, _ in n.succ}
    assert graph.raise_exit not in preds
