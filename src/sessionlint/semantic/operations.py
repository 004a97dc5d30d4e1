"""Method calls on sessions, with the lexical context the transaction rules reason about.

One walk of a function's own body records each call on a session-like receiver (a session or
connection of any ownership, a `scoped_session` registry or `db.session`): the method, the
receiver as written (its key), its value, and what encloses the call: loops (comprehensions
included), the `if`s between the innermost loop and the call, `with` blocks, and `try` parts.
It also records calls of project functions whose summary commits or rolls back a parameter.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

import libcst as cst

from .facts import FunctionInfo, code, dotted
from .index import ProjectIndex, Scope
from .values import Kind, Value
from .walk import children

Loop = Union[cst.For, cst.While, cst.BaseComp]
_COMPREHENSIONS = (cst.ListComp, cst.SetComp, cst.DictComp, cst.GeneratorExp)


@dataclass
class Context:
    loops: tuple[Loop, ...] = ()
    # the `if`s around the call, each with the number of loops open when it was entered
    ifs: tuple[tuple[cst.If, int], ...] = ()
    withs: tuple[cst.With, ...] = ()
    trys: tuple[tuple[Union[cst.Try, cst.TryStar], str], ...] = ()  # (try, "body"|"handler"|"else"|"finally")
    statement: Optional[cst.CSTNode] = None  # the small statement or compound header

    def guards(self) -> list[cst.If]:
        """The `if`s entered inside the innermost loop."""
        depth = len(self.loops)
        return [node for node, at in self.ifs if at == depth]


@dataclass
class SessionOp:
    call: cst.Call
    method: str
    receiver: str  # as written: `session`, `self.session`, `db.session`
    value: Value
    context: Context
    awaited: bool = False
    # used without awaiting in a way that shows it: `.all()` on it, or iterated by `for`
    misused: bool = False


@dataclass
class HelperCall:
    """A call of a project function that commits (or rolls back) a session argument."""

    call: cst.Call
    helper: str
    receiver: str
    value: Optional[Value]
    context: Context
    commits: bool = False
    rolls_back: bool = False
    queries: bool = False  # runs SQL on it, so may leave it failed


@dataclass
class Operations:
    ops: list[SessionOp] = field(default_factory=list)
    helpers: list[HelperCall] = field(default_factory=list)


def _may_be_session(value: Optional[Value]) -> bool:
    return value is not None and (value.is_session_like or value.kind is Kind.REGISTRY)


def receiver_key(node: cst.BaseExpression) -> str:
    """The receiver as written, whitespace folded: `session`, `self.session`, `db.session`."""
    name = dotted(node)  # the common case, without generating code
    return name if name is not None else " ".join(code(node).split())


def collect_operations(info: FunctionInfo, index: ProjectIndex, scope: Scope) -> Operations:
    out = Operations()
    misused: set[int] = set()
    module = index.modules.get(scope.module)
    helpers = {q.rpartition(".")[2] for q, fs in module.functions.items()
               if fs.commits_params or fs.rollbacks_params or fs.queries_params} if module is not None else set()
    if not info.call_names & helpers and \
            not any(_may_be_session(index.eval_ir(ir, scope)) for ir in info.method_receivers if ir is not None) and \
            not any(_may_be_session(index.lookup(p, scope)) for p in info.summary.params):
        return out  # nothing here can be a session operation, nor hand a session to a helper
    values: dict[str, Optional[Value]] = {}

    def value_of(node: cst.BaseExpression) -> Optional[Value]:
        key = receiver_key(node)
        if key not in values:
            values[key] = index.eval(node, scope)
        return values[key]

    def on_call(call: cst.Call, ctx: Context, awaited: bool) -> None:
        func = call.func
        if isinstance(func, cst.Attribute):
            receiver = func.value
            v = value_of(receiver)
            if v is not None and (v.is_session_like or v.kind is Kind.REGISTRY):
                out.ops.append(SessionOp(call, func.attr.value, receiver_key(receiver), v, ctx, awaited,
                                         id(call) in misused))
                return
        if not call.args or not isinstance(func, (cst.Name, cst.Attribute)):
            return
        fv = value_of(func)
        if fv is None or fv.kind not in (Kind.FUNCTION, Kind.SESSION_FUNCTION, Kind.PROVIDER):
            return
        summary = index.function_summary(fv.ref)
        if summary is None or not (summary.commits_params or summary.rollbacks_params or summary.queries_params):
            return
        params = list(summary.params)
        if isinstance(func, cst.Attribute) and params:
            base = value_of(func.value)
            if base is not None and base.kind is Kind.INSTANCE:
                params = params[1:]  # `self.helper(session)`
        for i, arg in enumerate(call.args):
            if arg.star:
                continue
            pname = arg.keyword.value if arg.keyword is not None else (params[i] if i < len(params) else None)
            if pname in summary.commits_params or pname in summary.rollbacks_params or \
                    pname in summary.queries_params:
                av = value_of(arg.value)
                out.helpers.append(HelperCall(call, summary.qualname, receiver_key(arg.value), av, ctx,
                                              pname in summary.commits_params,
                                              pname in summary.rollbacks_params,
                                              # a helper that catches everything lets no query error out
                                              pname in summary.queries_params and not summary.contains_errors))

    def visit(node: cst.CSTNode, ctx: Context) -> None:
        if isinstance(node, (cst.FunctionDef, cst.ClassDef, cst.Lambda)) and node is not info.node:
            return
        if isinstance(node, cst.SimpleStatementLine):
            for small in node.body:
                visit(small, Context(ctx.loops, ctx.ifs, ctx.withs, ctx.trys, small))
            return
        if isinstance(node, cst.Attribute) and isinstance(node.value, cst.Call):
            misused.add(id(node.value))  # `session.scalars(q).all()`
        if isinstance(node, cst.For) and isinstance(node.iter, cst.Call):
            misused.add(id(node.iter))  # `for row in session.exec(q):`
        if isinstance(node, (cst.For, cst.While)):
            header = node.iter if isinstance(node, cst.For) else node.test
            visit(header, Context(ctx.loops, ctx.ifs, ctx.withs, ctx.trys, header))
            inner = Context(ctx.loops + (node,), ctx.ifs, ctx.withs, ctx.trys)
            visit(node.body, inner)
            if node.orelse is not None:
                visit(node.orelse, ctx)
            return
        if isinstance(node, cst.If):
            visit(node.test, Context(ctx.loops, ctx.ifs, ctx.withs, ctx.trys, node.test))
            inner = Context(ctx.loops, ctx.ifs + ((node, len(ctx.loops)),), ctx.withs, ctx.trys)
            visit(node.body, inner)
            if node.orelse is not None:
                visit(node.orelse, inner)
            return
        if isinstance(node, cst.With):
            for item in node.items:
                visit(item, Context(ctx.loops, ctx.ifs, ctx.withs, ctx.trys, node))
            visit(node.body, Context(ctx.loops, ctx.ifs, ctx.withs + (node,), ctx.trys))
            return
        if isinstance(node, (cst.Try, cst.TryStar)):
            visit(node.body, Context(ctx.loops, ctx.ifs, ctx.withs, ctx.trys + ((node, "body"),)))
            for handler in node.handlers:
                visit(handler, Context(ctx.loops, ctx.ifs, ctx.withs, ctx.trys + ((node, "handler"),)))
            if node.orelse is not None:
                visit(node.orelse, Context(ctx.loops, ctx.ifs, ctx.withs, ctx.trys + ((node, "else"),)))
            if node.finalbody is not None:
                visit(node.finalbody, Context(ctx.loops, ctx.ifs, ctx.withs, ctx.trys + ((node, "finally"),)))
            return
        if isinstance(node, _COMPREHENSIONS):
            inner = Context(ctx.loops + (node,), ctx.ifs, ctx.withs, ctx.trys, ctx.statement)
            for child in children(node):
                visit(child, inner)
            return
        if isinstance(node, cst.Await) and isinstance(node.expression, cst.Call):
            on_call(node.expression, ctx, True)
            for child in children(node.expression):
                visit(child, ctx)
            return
        if isinstance(node, cst.Call):
            on_call(node, ctx, False)
        for child in children(node):
            visit(child, ctx)

    visit(info.node.body, Context())
    return out
