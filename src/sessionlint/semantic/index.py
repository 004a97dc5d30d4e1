"""The project index: resolves what a name or expression is, across the modules of a run.

It holds only `ModuleSummary` objects (source text of bindings, no trees), so it can be built
from summaries computed in worker processes. Evaluation is lazy and memoised per
(module, scope, name); a name met again while it is being resolved (an import cycle, a
self-referencing assignment) resolves to unknown, which is the conservative answer.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterable, Optional

import libcst as cst

from .facts import ClassSummary, FunctionSummary, ModuleSummary
from .ir import IR, NONE_IR, dotted_ir, parse_ir, to_ir
from .values import ANNOTATIONS, CATALOGUE, ZOPE_EXTENSION, ZOPE_REGISTER, Kind, Own, Value, connection, session

_IN_PROGRESS = object()
_MISSING = object()


# Decorators after which a function hands out the same object on every call.
_CACHING_DECORATORS = frozenset(
    {"cache", "lru_cache", "cached_property", "property", "functools.cache",
     "functools.lru_cache", "functools.cached_property"}
)


# What a project function may be known to return.
_PRODUCIBLE = frozenset({Kind.SESSION, Kind.CONNECTION, Kind.ENGINE, Kind.FACTORY, Kind.REGISTRY, Kind.FSA})


@dataclass(frozen=True)
class Scope:
    """Where an expression is evaluated: a module, optionally a function of it."""

    module: str
    function: Optional[str] = None  # qualname of the function
    class_qualname: Optional[str] = None
    self_name: Optional[str] = None


@dataclass(frozen=True)
class Vocabulary:
    """The project's own session vocabulary from configuration (dotted names)."""

    factories: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()
    closers: tuple[str, ...] = ()


def merge(values: Iterable[Optional[Value]], strict: bool = False) -> Optional[Value]:
    """The one value all known candidates agree on, else unknown.

    With `strict`, a session or connection must be the only candidate: who owns it depends on
    every value (`return session` beside `return Factory()` is a get-or-create, not a factory).
    """
    values = list(values)
    known = {v for v in values if v is not None}
    if len(known) != 1:
        return None
    value = known.pop()
    if strict and value.is_session_like and len(values) != sum(1 for v in values if v is not None):
        return None
    return value


def _real(irs: Iterable[IR]) -> list[IR]:
    """Candidate values without the literal `None` (a placeholder, not an alternative)."""
    return [ir for ir in irs if ir != NONE_IR]


class ProjectIndex:
    def __init__(self, summaries: Iterable[ModuleSummary], vocabulary: Vocabulary = Vocabulary(),
                 loader: Optional[Callable[[str], Optional[ModuleSummary]]] = None) -> None:
        # `loader` finds project modules that are not part of the run (see sessionlint.loader)
        self.loader = loader
        self.modules: dict[str, ModuleSummary] = {}
        for s in summaries:
            # two files claiming one module name (scripts in different folders): keep the first
            self.modules.setdefault(s.name, s)
        self.extra: dict[str, Value] = {}
        for name in vocabulary.factories:
            self.extra[_norm(name)] = Value(Kind.FACTORY)
        for name in vocabulary.providers:
            self.extra[_norm(name)] = Value(Kind.PROVIDER, produces=session(False, Own.MANAGED))
        for name in vocabulary.closers:
            self.extra[_norm(name)] = Value(Kind.CLOSER)
        self._memo: dict[tuple[object, ...], object] = {}
        self._creators: Optional[frozenset[str]] = None
        self.thread_subclasses: Optional[frozenset[str]] = None  # filled by handoff.thread_subclass_names

    def creator_names(self) -> frozenset[str]:
        """Last name segments under which a call can make a new session: SQLAlchemy's own and the
        project's factories, session classes and session-returning functions (cheap pre-filter)."""
        if self._creators is None:
            names = {"Session", "AsyncSession", "begin", "sessionmaker", "async_sessionmaker"}
            modules = list(self.modules.values())
            for module in modules:
                scope = Scope(module.name)
                for name in [*module.bindings, *module.annotations, *(q for q in module.functions if "." not in q)]:
                    v = self.lookup(name, scope)
                    if v is not None and (v.kind in (Kind.SESSION_CLASS, Kind.FACTORY, Kind.REGISTRY) or
                                          (v.produces is not None and v.produces.is_session_like)):
                        names.add(name)
                for cls in module.classes.values():
                    names.update(cls.attrs)
                    if cls.bases:
                        names.add(cls.qualname.rpartition(".")[2])
            for module in modules:  # aliases: `from app.db import SessionLocal as make_session`
                for local, origin in module.imports.items():
                    if origin.rpartition(".")[2] in names or CATALOGUE.get(origin) is not None:
                        names.add(local)
            self._creators = frozenset(names)
        return self._creators

    # ---- lookups by dotted name -------------------------------------------------------
    def dotted_value(self, name: str) -> Optional[Value]:
        hit = self.extra.get(name) or CATALOGUE.get(name)
        if hit is not None:
            return hit
        parts = name.split(".")
        if self.loader is not None:
            known = next((i for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in self.modules), 0)
            for i in range(len(parts), known, -1):
                loaded = self.loader(".".join(parts[:i]))
                if loaded is not None:
                    self.modules[loaded.name] = loaded
                    break
        for i in range(len(parts), 0, -1):
            mod = ".".join(parts[:i])
            if mod in self.modules:
                if i == len(parts):
                    return Value(Kind.MODULE, ref=mod)
                value = self.lookup(parts[i], Scope(mod))
                for attr in parts[i + 1:]:
                    if value is None:
                        return None
                    value = self.attribute(value, attr)
                return value
        return Value(Kind.MODULE, ref=name)

    def import_origin(self, name: str, scope: Scope) -> str:
        """The dotted origin a local name was imported from (the name itself if not imported)."""
        module = self.modules.get(scope.module)
        if module is None:
            return name
        if scope.function is not None:
            fs = module.functions.get(scope.function)
            if fs is not None and name in fs.local_imports:
                return fs.local_imports[name]
        return module.imports.get(name, name)

    def function_summary(self, ref: str) -> Optional[FunctionSummary]:
        mod, _, qual = ref.partition(":")
        m = self.modules.get(mod)
        return m.functions.get(qual) if m else None

    # ---- names ------------------------------------------------------------------------
    def _memoized(self, key: tuple[object, ...], compute: Callable[[], Optional[Value]]) -> Optional[Value]:
        """Memoise; a key met again while it is being computed (a cycle) is unknown."""
        memo = self._memo.get(key, _MISSING)
        if memo is _IN_PROGRESS:
            return None
        if memo is not _MISSING:
            return memo  # type: ignore[return-value]
        self._memo[key] = _IN_PROGRESS
        value = compute()
        self._memo[key] = value
        return value

    def lookup(self, name: str, scope: Scope) -> Optional[Value]:
        return self._memoized(("name", scope, name), lambda: self._lookup(name, scope))

    def _lookup(self, name: str, scope: Scope) -> Optional[Value]:
        module = self.modules.get(scope.module)
        if module is None:
            return None
        if scope.function is not None:
            fs = module.functions.get(scope.function)
            if fs is not None:
                if name == scope.self_name and scope.class_qualname:
                    return Value(Kind.INSTANCE, ref=f"{scope.module}:{scope.class_qualname}")
                if name in fs.params:
                    ann = fs.annotations.get(name)
                    return self.annotation(ann, Scope(scope.module)) if ann else None
                if name in fs.local_imports:
                    return self.dotted_value(fs.local_imports[name])
                if name in fs.assigns:
                    return merge((self.eval_ir(t, scope) for t in _real(fs.assigns[name])), strict=True)
                outer = scope.function.rpartition(".<locals>.")[0]
                if outer:
                    return self.lookup(name, Scope(scope.module, outer))
        mscope = Scope(scope.module)
        candidates: list[Optional[Value]] = []
        if name in module.bindings:
            candidates.extend(self.eval_ir(t, mscope) for t in module.bindings[name])
            if module.register_calls and name in self.registered(module.register_calls, mscope):
                # `register(DBSession)` at import time: the transaction manager commits
                candidates = [replace(v, tm=True) if v is not None else None for v in candidates]
        if name in module.annotations:
            candidates.append(self.annotation(module.annotations[name], mscope))
        if name in module.functions:
            candidates.append(self.function_value(scope.module, name))
        if name in module.classes:
            candidates.append(Value(Kind.CLASS, ref=f"{scope.module}:{name}"))
        if name in module.imports:
            candidates.append(self.dotted_value(module.imports[name]))
        return merge(candidates)

    # ---- functions and classes --------------------------------------------------------
    def function_value(self, module: str, qualname: str, class_qualname: Optional[str] = None) -> Optional[Value]:
        return self._memoized(("func", module, qualname),
                              lambda: self._function_value(module, qualname, class_qualname))

    def _function_value(self, module: str, qualname: str, class_qualname: Optional[str]) -> Optional[Value]:
        fs = self.modules[module].functions.get(qualname)
        ref = f"{module}:{qualname}"
        if fs is None:
            return None
        self_name = fs.params[0] if class_qualname and fs.params else None
        scope = Scope(module, qualname, class_qualname, self_name)
        produced: Optional[Value]
        if fs.is_generator:
            produced = merge((self.eval_ir(t, scope) for t in _real(fs.yields)), strict=True)
            if produced is not None and produced.kind in _PRODUCIBLE:
                if produced.is_session_like:
                    produced = produced.with_own(Own.MANAGED)
                return Value(Kind.PROVIDER, produced.is_async, ref=ref, produces=produced)
            return Value(Kind.FUNCTION, ref=ref)
        produced = merge((self.eval_ir(t, scope) for t in _real(fs.returns)), strict=True)
        registered = self.registered(fs.register_calls, scope) if fs.register_calls else set()
        if produced is None and any(ir is not None and ir[0] == "name" and ir[1] in registered
                                    for ir in fs.returns):
            # only sessions are registered with zope.sqlalchemy: Pyramid's get_tm_session()
            produced = session(fs.is_async, Own.BORROWED, tm=True)
        if produced is None and fs.return_annotation is not None:
            # `-> Engine` / `-> sessionmaker` say what comes back; `-> Session` says it is a
            # session but not who owns it: enough for the concurrency rules, never a leak
            declared = self.annotation(fs.return_annotation, Scope(module))
            if declared is not None and declared.kind in (Kind.ENGINE, Kind.FACTORY, Kind.REGISTRY):
                produced = declared
            elif declared is not None and declared.is_session_like:
                produced = declared.with_own(Own.UNKNOWN)
        if produced is not None and produced.kind in _PRODUCIBLE:
            if produced.is_session_like and any(d in _CACHING_DECORATORS for d in fs.decorators):
                produced = produced.with_own(Own.SCOPED)
            elif produced.is_session_like and produced.own is Own.MANAGED:
                produced = None  # returns a context manager's session: not ours to judge
            if produced is not None and produced.is_session_like and \
                    any(ir is not None and ir[0] == "name" and ir[1] in registered for ir in fs.returns):
                # the transaction manager commits and closes it, not the caller
                produced = replace(produced, tm=True, own=Own.BORROWED)
            if produced is not None:
                return Value(Kind.SESSION_FUNCTION, produced.is_async, ref=ref, produces=produced)
        return Value(Kind.FUNCTION, ref=ref)

    def class_attribute(self, ref: str, attr: str, instance: bool) -> Optional[Value]:
        # memoised like names: `self.dir = C.dir` refers to itself through the class
        return self._memoized(("class_attr", ref, attr, instance),
                              lambda: self._class_attribute(ref, attr, instance))

    def _class_attribute(self, ref: str, attr: str, instance: bool) -> Optional[Value]:
        mod, _, qual = ref.partition(":")
        module = self.modules.get(mod)
        cls: Optional[ClassSummary] = module.classes.get(qual) if module else None
        if module is None or cls is None:
            return None
        mscope = Scope(mod)
        if attr in cls.methods:
            return self.function_value(mod, f"{qual}.{attr}", qual if instance else None)
        candidates = [self.eval_ir(t, mscope) for t in cls.attrs.get(attr, [])]
        if attr in cls.annotations:
            candidates.append(self.annotation(cls.annotations[attr], mscope))
        value = merge(candidates)
        if value is not None and value.is_session_like:
            # a session held by an object belongs to whoever made the object
            value = value.with_own(Own.BORROWED)
        return value

    # ---- expressions ------------------------------------------------------------------
    def eval(self, node: cst.BaseExpression, scope: Scope) -> Optional[Value]:
        """Evaluate a live expression of the file being analysed."""
        return self.eval_ir(to_ir(node), scope)

    def eval_ir(self, ir: IR, scope: Scope) -> Optional[Value]:
        if ir is None:
            return None
        tag = ir[0]
        if tag == "name":
            return self.lookup(ir[1], scope)
        if tag == "attr":
            base = self.eval_ir(ir[1], scope)
            return self.attribute(base, ir[2]) if base is not None else None
        if tag == "call":
            func = self.eval_ir(ir[1], scope)
            return self.call(func, ir[2], scope) if func is not None else None
        if tag == "await":
            return self.eval_ir(ir[1], scope)
        if tag == "enter":
            return self._entered(self.eval_ir(ir[1], scope))
        return None

    @staticmethod
    def _entered(cm: Optional[Value]) -> Optional[Value]:
        """What `with cm as x` binds to x."""
        if cm is None:
            return None
        if cm.kind is Kind.PROVIDER:
            return cm.produces
        if cm.is_session_like:
            return cm.with_own(Own.MANAGED)
        return None

    def attribute(self, base: Value, attr: str) -> Optional[Value]:
        kind = base.kind
        if kind is Kind.MODULE:
            return self.dotted_value(f"{base.ref}.{attr}")
        if kind in (Kind.CLASS, Kind.INSTANCE):
            return self.class_attribute(base.ref, attr, kind is Kind.INSTANCE)
        if kind is Kind.FSA:
            if attr == "session":
                return Value(Kind.REGISTRY, own=Own.SCOPED)
            if attr == "engine":
                return Value(Kind.ENGINE)
            return None
        if kind is Kind.FACTORY and attr == "begin":
            return Value(Kind.FACTORY_BEGIN, base.is_async)
        if kind in (Kind.SESSION, Kind.CONNECTION, Kind.ENGINE, Kind.REGISTRY):
            if kind is Kind.SESSION and attr == "bind":
                return Value(Kind.ENGINE, base.is_async)
            if kind is Kind.CONNECTION and attr == "engine":
                return Value(Kind.ENGINE, base.is_async)
            return Value(Kind.METHOD, base.is_async, base.own, receiver=kind, method=attr)
        return None

    def call(self, func: Value, args: tuple, scope: Scope) -> Optional[Value]:
        kind, a = func.kind, func.is_async
        if kind in (Kind.SESSION_CLASS, Kind.FACTORY):
            keeps = func.keeps_loaded or _no_expire(args)
            if func.on_connection or self._bound_to_connection(kind, args, scope):
                # joins a connection somebody else owns (Alembic's, a test's outer transaction)
                return replace(session(a, Own.BORROWED, func.tm), keeps_loaded=keeps)
            return replace(session(a, Own.OWNED, func.tm), keeps_loaded=keeps)
        if kind is Kind.FACTORY_BEGIN:
            return session(a, Own.MANAGED)
        if kind is Kind.FACTORY_MAKER:
            # `sessionmaker(bind=op.get_bind())` makes sessions on somebody else's connection
            return Value(Kind.FACTORY, a, on_connection=self._bound_to_connection(kind, args, scope),
                         tm=self._zope_extension(args, scope), keeps_loaded=_no_expire(args))
        if kind is Kind.REGISTRY_MAKER:
            factory = self.eval_ir(args[0][1], scope) if args and args[0][0] == "" else None
            tm = self._zope_extension(args, scope) or (factory is not None and factory.tm)
            return Value(Kind.REGISTRY, a, Own.SCOPED, tm=tm)
        if kind is Kind.REGISTRY:
            return session(a, Own.SCOPED, func.tm)
        if kind is Kind.ENGINE_MAKER:
            return Value(Kind.ENGINE, a)
        if kind is Kind.FSA_MAKER:
            return Value(Kind.FSA)
        if kind in (Kind.SESSION_FUNCTION,):
            return func.produces
        if kind is Kind.PROVIDER:
            return func  # the context manager; `with` unwraps it
        if kind is Kind.CLOSING:
            return self.eval_ir(args[0][1], scope) if args else None
        if kind is Kind.CLASS:
            base = self._session_base(func.ref)
            if base is not None:  # `class TenantSession(Session)`
                return self.call(base, args, scope)
            return Value(Kind.INSTANCE, ref=func.ref)
        if kind is Kind.METHOD:
            return _method_result(func)
        if kind is Kind.INSTANCE and func.ref:
            # an object of a project class called like a factory: what its `__call__` returns
            method = self.class_attribute(func.ref, "__call__", instance=True)
            if method is not None and method.kind is not Kind.INSTANCE:
                return self.call(method, args, scope)
        return None

    def _zope_extension(self, args: tuple, scope: Scope) -> bool:
        """`sessionmaker(extension=ZopeTransactionExtension())`: the old zope.sqlalchemy API."""
        for keyword, value in args:
            if keyword == "extension" and value is not None and value[0] == "call":
                origin = dotted_ir(value[1])
                if origin is not None and self.origin(origin, scope) in ZOPE_EXTENSION:
                    return True
        return False

    def origin(self, name: str, scope: Scope) -> str:
        """The dotted origin of a dotted name as written (`sa.exc.IntegrityError` with
        `import sqlalchemy as sa` is `sqlalchemy.exc.IntegrityError`); "" for ""."""
        head, _, rest = name.partition(".")
        if not head:
            return ""
        origin = self.import_origin(head, scope)
        return f"{origin}.{rest}" if rest else origin

    def registered(self, register_calls: Iterable[tuple[str, str]], scope: Scope) -> set[str]:
        """Names handed to `zope.sqlalchemy.register` by these calls."""
        return {arg for callee, arg in register_calls if self.origin(callee, scope) in ZOPE_REGISTER}

    def _session_base(self, ref: str, depth: int = 0) -> Optional[Value]:
        mod, _, qual = ref.partition(":")
        cls = self.modules[mod].classes.get(qual) if mod in self.modules else None
        if cls is None or depth > 5:
            return None
        for base_ir in cls.bases:
            base = self.eval_ir(base_ir, Scope(mod))
            if base is not None and base.kind is Kind.SESSION_CLASS:
                return base
            if base is not None and base.kind is Kind.CLASS:
                found = self._session_base(base.ref, depth + 1)
                if found is not None:
                    return found
        return None

    def _bound_to_connection(self, kind: Kind, args: tuple, scope: Scope) -> bool:
        for i, (keyword, value) in enumerate(args):
            if keyword == "bind" or (keyword == "" and i == 0 and kind is Kind.SESSION_CLASS):
                v = self.eval_ir(value, scope)
                return v is not None and v.kind is Kind.CONNECTION
        return False

    # ---- annotations ------------------------------------------------------------------
    def annotation(self, ir: IR, scope: Scope, depth: int = 0) -> Optional[Value]:
        """What a parameter annotated `ir` holds: `Session`, `Optional[Session]`,
        `Session | None`, `"Session"`, `Annotated[Session, Depends(...)]`, project aliases."""
        if ir is None or depth > 8:
            return None
        tag = ir[0]
        if tag == "str":
            return self.annotation(parse_ir(ir[1]), scope, depth + 1)
        if tag == "or":
            return merge([self.annotation(ir[1], scope, depth + 1), self.annotation(ir[2], scope, depth + 1)])
        if tag == "sub":
            head = self._annotation_origin(ir[1], scope)
            elements = ir[2]
            if head in ("typing.Optional", "typing.Annotated", "typing_extensions.Annotated",
                        "Optional", "Annotated") and elements:
                return self.annotation(elements[0], scope, depth + 1)
            if head in ("typing.Union", "Union"):
                return merge(self.annotation(e, scope, depth + 1) for e in elements)
            if head in ANNOTATIONS:  # a generic SQLAlchemy class: `async_sessionmaker[AsyncSession]`
                return ANNOTATIONS[head]
            return None
        origin = self._annotation_origin(ir, scope)
        if origin is None:
            return None
        if origin in ANNOTATIONS:
            return ANNOTATIONS[origin]
        # a project alias such as `SessionDep = Annotated[Session, Depends(get_db)]`
        mod, _, name = origin.rpartition(".")
        resolved = self.dotted_value(origin) if mod else None  # follows re-exports, may load modules
        module = self.modules.get(mod)
        if module is not None and name in module.bindings:
            return merge(self.annotation(b, Scope(mod), depth + 1) for b in module.bindings[name])
        if resolved is not None and resolved.kind is Kind.CLASS:
            # `db: PrefectDBInterface`: an instance of a project class, whose methods we know
            return Value(Kind.INSTANCE, ref=resolved.ref)
        return None

    def _annotation_origin(self, ir: IR, scope: Scope) -> Optional[str]:
        name = dotted_ir(ir)
        if name is None:
            return None
        head, _, rest = name.partition(".")
        module = self.modules.get(scope.module)
        origin: Optional[str] = None
        if module is not None:
            if head in module.imports:
                origin = module.imports[head]
            elif head in module.bindings or head in module.classes:
                origin = f"{scope.module}.{head}"
        if origin is None:
            return name
        return f"{origin}.{rest}" if rest else origin


def _no_expire(args: tuple) -> bool:
    """`expire_on_commit=False` among the call's keyword arguments."""
    return any(keyword == "expire_on_commit" and value == ("name", "False") for keyword, value in args)


def _method_result(method: Value) -> Optional[Value]:
    recv, name, a = method.receiver, method.method, method.is_async
    if recv is Kind.ENGINE:
        if name == "connect":
            return connection(a, Own.OWNED)
        if name == "begin":
            return connection(a, Own.MANAGED)
        return None
    if recv is Kind.CONNECTION and name in ("execution_options",):
        return connection(a, method.own or Own.BORROWED)  # the same connection, options set
    if recv is Kind.SESSION:
        if name == "connection":
            return connection(a, Own.BORROWED)
        if name == "get_bind":
            return Value(Kind.ENGINE, a)
        return None
    return None


def _norm(name: str) -> str:
    """Accept both `pkg.mod:attr` and `pkg.mod.attr` in configuration."""
    return name.replace(":", ".")
