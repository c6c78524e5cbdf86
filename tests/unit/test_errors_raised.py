"""Flows, tasks, commands and the webhook receiver raise nothing outside the error tree, so that
every command exits with the code of the kind of failure (greenlight.errors.exit_code); the few
exceptions are listed below, each with the reason it is not a GreenlightError."""

from __future__ import annotations

import ast
import builtins
import importlib
import types
import typing
from pathlib import Path
from typing import Any

import pytest

from greenlight.errors import GreenlightError, InputInvalid, NotFound, TransientError
from greenlight.settings import REPO_ROOT

PACKAGES = ("greenlight/flows", "greenlight/tasks", "greenlight/commands", "greenlight/webhook")

#: (file, what is raised) -> why it may be raised though it is outside the tree
ALLOWED: dict[tuple[str, str], str] = {
    ("greenlight/flows/approval_wait.py", "FlowPauseTimeout"): (
        "raised inside the approval loop to join Prefect's own pause timeout; the except below "
        "turns both into ReleaseRefused, so it never leaves the flow"
    ),
    ("greenlight/flows/bake.py", "AssertionError"): (
        "after a retry loop that always returns or raises: a programming error if ever reached"
    ),
    ("greenlight/webhook/app.py", "_Reject"): (
        "the GitHub receiver's HTTP answer (status and message), caught by its request handler: "
        "never leaves the module"
    ),
    ("greenlight/webhook/slack.py", "_Stop"): (
        "the Slack receiver's HTTP answer (a _Reject), caught by its request handler: never leaves it"
    ),
}


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _scope(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> ast.AST:
    """The function (or the module) that ``node`` is in."""
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            return node
    return node


def _in_tree(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, GreenlightError)


def _types_of_annotation(annotation: Any) -> list[Any]:
    """The classes a return or variable annotation names (a union flattened, None dropped)."""
    if annotation is None or annotation is type(None):
        return []
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(annotation) for t in _types_of_annotation(arg)]
    return [annotation]


class Checker:
    """Finds the raises in one module's source whose error is not (provably) a GreenlightError."""

    def __init__(self, source: str, namespace: dict[str, Any]) -> None:
        self.tree = ast.parse(source)
        self.namespace = namespace
        self.parents = _parents(self.tree)

    def problems(self) -> list[tuple[int, str, str]]:
        """(line, what is raised, why it is not in the tree) for each offending raise."""
        out = []
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Raise) and node.exc is not None:
                scope = _scope(node, self.parents)
                for name, why in self._outside(node.exc, scope, set()):
                    out.append((node.lineno, name, why))
        return out

    def _resolve(self, expr: ast.expr) -> Any:
        """The module-level object a Name or dotted Attribute names, or KeyError."""
        if isinstance(expr, ast.Name):
            return self.namespace[expr.id]
        if isinstance(expr, ast.Attribute):
            try:
                return getattr(self._resolve(expr.value), expr.attr)
            except AttributeError:
                raise KeyError(ast.unparse(expr)) from None
        raise KeyError(ast.unparse(expr))

    def _outside(self, exc: ast.expr, scope: ast.AST, seen: set[str]) -> list[tuple[str, str]]:
        """What in ``exc`` (an expression raised, or assigned to a name that is raised) is not a
        GreenlightError; [] when all of it is."""
        if isinstance(exc, ast.Constant) and exc.value is None:
            return []
        if isinstance(exc, ast.IfExp):
            return self._outside(exc.body, scope, seen) + self._outside(exc.orelse, scope, seen)
        if isinstance(exc, ast.BoolOp):
            return [p for value in exc.values for p in self._outside(value, scope, seen)]
        if isinstance(exc, ast.Call):
            func = exc.func
            if isinstance(func, ast.Call) and isinstance(func.func, ast.Name) and func.func.id == "type":
                return []  # type(e)(message): the same kind as the error caught
            return self._callable_outside(func, scope, seen)
        if isinstance(exc, ast.Name):
            return self._name_outside(exc, scope, seen, called=False)
        return [(ast.unparse(exc), "not a name, a call or a choice between them")]

    def _callable_outside(self, func: ast.expr, scope: ast.AST, seen: set[str]) -> list[tuple[str, str]]:
        if isinstance(func, ast.Name) and func.id not in self.namespace:
            return self._name_outside(func, scope, seen, called=True)
        try:
            target = self._resolve(func)
        except KeyError:
            return [(ast.unparse(func), "cannot be resolved")]
        return self._object_outside(ast.unparse(func), target)

    def _object_outside(self, name: str, target: Any) -> list[tuple[str, str]]:
        if isinstance(target, type):
            return [] if _in_tree(target) else [(name, f"{target.__module__}.{target.__qualname__}")]
        if callable(target):  # a function that builds the error: its return annotation says the kind
            hints = typing.get_type_hints(target)
            kinds = _types_of_annotation(hints.get("return"))
            if kinds and all(_in_tree(k) for k in kinds):
                return []
            return [(name, f"a function returning {hints.get('return')!r}")]
        return [(name, f"{type(target).__name__}, not an exception class")]

    def _name_outside(
        self, name: ast.Name, scope: ast.AST, seen: set[str], called: bool
    ) -> list[tuple[str, str]]:
        """A local name raised (or called and raised): bound by an ``except ... as`` (re-raising
        what was caught), or assigned in the function: every value assigned must be in the tree."""
        if name.id in seen:
            return []
        seen = seen | {name.id}
        problems: list[tuple[str, str]] = []
        annotated = [
            node
            for node in ast.walk(scope)
            if isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == name.id
        ]
        if annotated:  # mypy holds every value assigned to the annotation: it says the kind
            for ann in annotated:
                annotation = eval(ast.unparse(ann.annotation), self.namespace)
                problems += [
                    p
                    for kind in _types_of_annotation(annotation)
                    for p in self._object_outside(name.id, kind)
                ]
            return problems
        bound = False
        for node in ast.walk(scope):
            if isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    if (alias.asname or alias.name) == name.id:  # imported inside the function
                        target = getattr(importlib.import_module(node.module), alias.name)
                        return self._object_outside(name.id, target)
            elif isinstance(node, ast.ExceptHandler) and node.name == name.id:
                bound = True
            elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == name.id for t in node.targets
            ):
                bound = True
                value = node.value
                problems += (
                    self._callable_outside(value, scope, seen)
                    if called and isinstance(value, ast.Name | ast.Attribute)
                    else self._assigned_class_outside(value, scope, seen)
                    if called
                    else self._outside(value, scope, seen)
                )
        if not bound:
            if name.id in self.namespace:
                return self._object_outside(name.id, self.namespace[name.id])
            if hasattr(builtins, name.id):
                return self._object_outside(name.id, getattr(builtins, name.id))
            return [(name.id, "not bound in the function nor the module")]
        return problems

    def _assigned_class_outside(
        self, value: ast.expr, scope: ast.AST, seen: set[str]
    ) -> list[tuple[str, str]]:
        """``kind = A if ... else B`` before ``raise kind(...)``: every class chosen must be in the tree."""
        if isinstance(value, ast.IfExp):
            return self._assigned_class_outside(value.body, scope, seen) + self._assigned_class_outside(
                value.orelse, scope, seen
            )
        return self._callable_outside(value, scope, seen)


def modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (REPO_ROOT / package).rglob("*.py"))


def test_every_module_is_walked() -> None:
    """The walk covers flows, tasks, commands and the webhook (a test that finds no file proves nothing)."""
    found = {str(p.relative_to(REPO_ROOT).parent) for p in modules()}
    assert set(PACKAGES) <= found
    assert len(modules()) > 40


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_raises_only_errors_of_the_tree(path: Path) -> None:
    relative = str(path.relative_to(REPO_ROOT))
    module = importlib.import_module(relative.removesuffix(".py").replace("/", "."))
    problems = [
        f"{relative}:{line}: raise {name} ({why})"
        for line, name, why in Checker(path.read_text(), vars(module)).problems()
        if (relative, name) not in ALLOWED
    ]
    assert not problems, "raise a GreenlightError subclass (greenlight/errors.py) instead:\n" + "\n".join(
        problems
    )


def test_every_allowed_exception_is_still_raised() -> None:
    """An allow-list entry whose raise is gone must go too."""
    raised = set()
    for path in modules():
        relative = str(path.relative_to(REPO_ROOT))
        module = importlib.import_module(relative.removesuffix(".py").replace("/", "."))
        raised |= {(relative, name) for _, name, _ in Checker(path.read_text(), vars(module)).problems()}
    assert set(ALLOWED) <= raised


def make_error(message: str) -> NotFound | TransientError:
    """A builder of tree errors, as dns_failover.refusal is."""
    return NotFound(message)


def make_anything(message: str) -> Exception:
    return RuntimeError(message)


NAMESPACE: dict[str, Any] = {
    "InputInvalid": InputInvalid,
    "NotFound": NotFound,
    "TransientError": TransientError,
    "GreenlightError": GreenlightError,
    "FlowPauseTimeout": TimeoutError,
    "make_error": make_error,
    "make_anything": make_anything,
    "errors": importlib.import_module("greenlight.errors"),
}


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        ("def f():\n    raise NotFound('x')", []),
        ("def f():\n    raise errors.Conflict('x')", []),
        ("def f():\n    raise ValueError('x')", ["ValueError"]),
        ("def f():\n    raise RuntimeError", ["RuntimeError"]),
        ("def f():\n    raise FlowPauseTimeout('prefect')", ["FlowPauseTimeout"]),
        ("def f():\n    raise make_error('x')", []),
        ("def f():\n    raise make_anything('x')", ["make_anything"]),
        ("def f(c):\n    kind = TransientError if c else InputInvalid\n    raise kind('x')", []),
        ("def f(c):\n    kind = TransientError if c else KeyError\n    raise kind('x')", ["KeyError"]),
        ("def f():\n    error = NotFound('x')\n    error.extra = 1\n    raise error", []),
        ("def f():\n    error = AssertionError('unreachable')\n    raise error", ["AssertionError"]),
        ("def f():\n    failure: GreenlightError | None = None\n    raise failure", []),
        ("def f():\n    failure: Exception | None = None\n    raise failure", ["failure"]),
        ("def f():\n    try:\n        g()\n    except OSError as e:\n        raise e", []),
        ("def f():\n    try:\n        g()\n    except NotFound as e:\n        raise type(e)('again')", []),
        ("def f():\n    try:\n        g()\n    except OSError:\n        raise", []),
        ("def f():\n    raise undefined_name", ["undefined_name"]),
    ],
    ids=[
        "tree-class",
        "tree-attribute",
        "value-error",
        "bare-class",
        "prefect-exception",
        "builder",
        "builder-of-anything",
        "chosen-kind",
        "chosen-kind-outside",
        "prepared-error",
        "prepared-assertion",
        "annotated-none-or-tree",
        "annotated-anything",
        "re-raise-caught",
        "same-kind",
        "bare-re-raise",
        "unbound",
    ],
)
def test_the_walk_flags_what_is_outside_the_tree(source: str, flagged: list[str]) -> None:
    """The checker itself: each kind of raise it must accept or refuse."""
    assert [name for _, name, _ in Checker(source, NAMESPACE).problems()] == flagged


def test_the_tree_drawn_in_errors_py_names_every_error_class_greenlight_defines() -> None:
    """A class of errors defined anywhere in greenlight (a flow's DrillFailed too) is drawn in the
    tree at the top of greenlight/errors.py, so a reader sees what to catch."""
    drawn = importlib.import_module("greenlight.errors").__doc__ or ""
    defined = set()
    for path in sorted((REPO_ROOT / "greenlight").rglob("*.py")):
        relative = str(path.relative_to(REPO_ROOT))
        module = importlib.import_module(relative.removesuffix(".py").replace("/", "."))
        defined |= {
            name
            for name, value in vars(module).items()
            if _in_tree(value) and value.__module__ == module.__name__ and not name.startswith("_")
        }
    assert {name for name in defined if f" {name} " not in drawn} == set()
