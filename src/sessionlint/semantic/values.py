"""What an expression can be, as far as sessions go: the abstract values of the session model.

A value is the result of resolving a name or evaluating a call chain through imports, module
bindings and the catalogue of SQLAlchemy origins. Anything not listed here is `None` (unknown),
which every rule treats as "not a session".
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Optional


class Kind(enum.Enum):
    SESSION_CLASS = "session-class"  # calling it makes a new Session
    FACTORY_MAKER = "factory-maker"  # sessionmaker / async_sessionmaker
    FACTORY = "factory"  # a sessionmaker instance: calling it makes a new Session
    FACTORY_BEGIN = "factory-begin"  # factory.begin: a context manager that closes
    REGISTRY_MAKER = "registry-maker"  # scoped_session
    REGISTRY = "registry"  # scoped_session instance / db.session proxy
    SESSION = "session"
    CONNECTION = "connection"
    ENGINE_MAKER = "engine-maker"  # create_engine and friends
    ENGINE = "engine"
    FSA_MAKER = "fsa-maker"  # flask_sqlalchemy.SQLAlchemy
    FSA = "fsa"  # the Flask-SQLAlchemy extension object (db)
    METHOD = "method"  # a bound method of a session-like value, see `Value.method`
    CLOSING = "closing"  # contextlib.closing
    PROVIDER = "provider"  # project function: context manager / generator yielding a session
    SESSION_FUNCTION = "session-function"  # project function whose result is known (`produces`)
    FUNCTION = "function"  # any other project function (its summary may close/store params)
    CLOSER = "closer"  # configured helper that closes the session passed to it
    CLOSE_ALL = "close-all"  # sqlalchemy.orm.close_all_sessions
    MODULE = "module"
    CLASS = "class"
    INSTANCE = "instance"  # `self` inside a method of a project class


class Own(enum.Enum):
    """Ownership of a session value at the place it is produced."""

    OWNED = "owned"
    BORROWED = "borrowed"
    MANAGED = "managed"
    SCOPED = "scoped"
    UNKNOWN = "unknown"  # a session of unknown origin (`def get() -> AsyncSession`): never a leak


@dataclass(frozen=True)
class Value:
    kind: Kind
    is_async: bool = False
    own: Optional[Own] = None
    # for METHOD: the receiver's kind and the method name
    receiver: Optional[Kind] = None
    method: str = ""
    # for PROVIDER / SESSION_FUNCTION: the value produced (yielded / returned)
    produces: Optional["Value"] = None
    # for MODULE / CLASS / INSTANCE / FUNCTION: what it refers to ("module" or "module:qualname")
    ref: str = ""
    # for FACTORY: bound to a connection somebody else owns, so its sessions are borrowed
    on_connection: bool = False
    # for FACTORY / REGISTRY / SESSION: joined to a transaction manager (zope.sqlalchemy)
    tm: bool = False
    # for FACTORY / SESSION: made with expire_on_commit=False (loaded attributes survive commit)
    keeps_loaded: bool = False

    @property
    def is_session_like(self) -> bool:
        return self.kind in (Kind.SESSION, Kind.CONNECTION)

    def with_own(self, own: Own) -> "Value":
        return replace(self, own=own)


def session(is_async: bool, own: Own, tm: bool = False) -> Value:
    return Value(Kind.SESSION, is_async, own, tm=tm)


def connection(is_async: bool, own: Own) -> Value:
    return Value(Kind.CONNECTION, is_async, own)


_S = "sqlalchemy"
_SO = "sqlalchemy.orm"
_SA = "sqlalchemy.ext.asyncio"

# Dotted origins of the names SQLAlchemy (and the libraries built on it) export. The keys are
# every public path a name is importable from, so `from sqlalchemy.orm.session import Session`
# resolves like `from sqlalchemy.orm import Session`.
CATALOGUE: dict[str, Value] = {}


def _register(names: list[str], value: Value) -> None:
    for name in names:
        CATALOGUE[name] = value


_register(
    [f"{_SO}.Session", f"{_SO}.session.Session", "sqlmodel.Session", "sqlmodel.orm.session.Session"],
    Value(Kind.SESSION_CLASS),
)
_register(
    [f"{_SA}.AsyncSession", f"{_SA}.session.AsyncSession", "sqlmodel.ext.asyncio.session.AsyncSession"],
    Value(Kind.SESSION_CLASS, is_async=True),
)
_register([f"{_SO}.sessionmaker", f"{_SO}.session.sessionmaker"], Value(Kind.FACTORY_MAKER))
_register(
    [f"{_SA}.async_sessionmaker", f"{_SA}.session.async_sessionmaker"],
    Value(Kind.FACTORY_MAKER, is_async=True),
)
_register([f"{_SO}.scoped_session", f"{_SO}.scoping.scoped_session"], Value(Kind.REGISTRY_MAKER))
_register(
    [f"{_SA}.async_scoped_session", f"{_SA}.scoping.async_scoped_session"],
    Value(Kind.REGISTRY_MAKER, is_async=True),
)
_register(
    [f"{_S}.create_engine", f"{_S}.engine.create_engine", f"{_S}.engine.create.create_engine",
     f"{_S}.engine_from_config", f"{_S}.engine.engine_from_config", "sqlmodel.create_engine"],
    Value(Kind.ENGINE_MAKER),
)
_register(
    [f"{_SA}.create_async_engine", f"{_SA}.engine.create_async_engine",
     f"{_SA}.async_engine_from_config"],
    Value(Kind.ENGINE_MAKER, is_async=True),
)
_register(["flask_sqlalchemy.SQLAlchemy", "flask_sqlalchemy.extension.SQLAlchemy"], Value(Kind.FSA_MAKER))
_register(["contextlib.closing"], Value(Kind.CLOSING))
# Alembic hands migrations the connection it owns; a session bound to it owns nothing.
_register(["alembic.op.get_bind", "alembic.context.get_bind"],
          Value(Kind.SESSION_FUNCTION, produces=Value(Kind.CONNECTION, own=Own.BORROWED)))
# Celery's database backend: rolls back and closes the session it is given, in a finally.
_register(["celery.backends.database.session.session_cleanup"], Value(Kind.CLOSER))
# Closes every session in memory.
_register(["sqlalchemy.orm.close_all_sessions", "sqlalchemy.orm.session.close_all_sessions"],
          Value(Kind.CLOSE_ALL))
# The transaction manager closes the sessions registered with it.
ZOPE_REGISTER = ("zope.sqlalchemy.register", "zope.sqlalchemy.datamanager.register")
ZOPE_EXTENSION = ("zope.sqlalchemy.ZopeTransactionExtension",
                  "zope.sqlalchemy.datamanager.ZopeTransactionExtension")
_register(list(ZOPE_REGISTER), Value(Kind.CLOSER))

# Annotation targets: a parameter annotated with one of these holds a borrowed value.
ANNOTATIONS: dict[str, Value] = {}
for _name, _val in list(CATALOGUE.items()):
    if _val.kind is Kind.SESSION_CLASS:
        ANNOTATIONS[_name] = session(_val.is_async, Own.BORROWED)
    elif _val.kind is Kind.FACTORY_MAKER:
        ANNOTATIONS[_name] = Value(Kind.FACTORY, _val.is_async)
    elif _val.kind is Kind.REGISTRY_MAKER:
        ANNOTATIONS[_name] = Value(Kind.REGISTRY, _val.is_async, Own.SCOPED)
for _name in [f"{_S}.Engine", f"{_S}.engine.Engine", f"{_S}.engine.base.Engine"]:
    ANNOTATIONS[_name] = Value(Kind.ENGINE)
for _name in [f"{_SA}.AsyncEngine", f"{_SA}.engine.AsyncEngine"]:
    ANNOTATIONS[_name] = Value(Kind.ENGINE, is_async=True)
for _name in [f"{_S}.Connection", f"{_S}.engine.Connection", f"{_S}.engine.base.Connection"]:
    ANNOTATIONS[_name] = connection(False, Own.BORROWED)
for _name in [f"{_SA}.AsyncConnection", f"{_SA}.engine.AsyncConnection"]:
    ANNOTATIONS[_name] = connection(True, Own.BORROWED)

# Methods whose call ends the life of a session or connection.
CLOSE_METHODS = frozenset({"close", "aclose", "invalidate"})
