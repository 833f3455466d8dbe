"""The package's shape, checked from its source: no import circle, one at-fork hook, the
wire contract spelled out once, and a public surface that says what it exports.

Everything here reads files with `ast`; nothing is imported except for the
exported-members checks, which import the public modules the way a user would.
"""

from __future__ import annotations

import ast
import importlib
import re
import types
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import zstream_mp
from zstream_mp import _wire

PACKAGE = Path(zstream_mp.__file__).resolve().parent
ROOT = PACKAGE.parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
PACKAGES = {name for name, path in MODULES.items() if path.name == "__init__.py"}


def _tree(name: str) -> ast.Module:
    return ast.parse(MODULES[name].read_text(encoding="utf-8"), str(MODULES[name]))


def _rel(name: str) -> str:
    return str(MODULES[name].relative_to(ROOT))


# --------------------------------------------------------------------------- import graph


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node that can run, including function bodies; `if TYPE_CHECKING:` skipped."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _resolve_from(module: str, node: ast.ImportFrom) -> str | None:
    if not node.level:
        return node.module
    base = module if module in PACKAGES else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    return f"{base}.{node.module}" if node.module else base


def imports_of(module: str) -> set[str]:
    """The package modules `module` imports, at top level or inside functions."""
    found: set[str] = set()
    for node in _runtime_nodes(_tree(module)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve_from(module, node)
            if target is None:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                # `from pkg import sub` imports the submodule; `from pkg import name`
                # runs the package's `__init__`.
                found.add(sub if sub in MODULES else target)
    return {name for name in found if name in MODULES and name != module}


def import_graph() -> dict[str, set[str]]:
    return {name: imports_of(name) for name in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(_circle(graph, set(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _circle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """One concrete circle through the component, as `a -> b -> ... -> a`."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    return sorted(component)  # unreachable for a real component


def test_the_graph_sees_function_level_imports() -> None:
    """The walker must see an import hidden in a function, or the next test proves nothing."""
    graph = import_graph()
    assert "zstream_mp._zenml" in graph["zstream_mp._process"]  # inside _refresh_token()
    assert "zstream_mp._wire" in graph["zstream_mp._transport"]


def test_no_import_circle() -> None:
    found = cycles(import_graph())
    assert not found, "import circles in zstream_mp:\n" + "\n".join(
        "  " + " -> ".join(c) for c in found
    )


def test_cycle_finder_reports_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]


def test_leaves_import_nothing_from_the_package() -> None:
    for leaf in ("zstream_mp._wire", "zstream_mp._version", "zstream_mp._forksafe"):
        assert imports_of(leaf) == set(), f"{leaf} must stay a leaf"


# --------------------------------------------------------------------------- at-fork hook


def test_exactly_one_register_at_fork_call() -> None:
    calls = [
        (_rel(name), node.lineno)
        for name in MODULES
        for node in _runtime_nodes(_tree(name))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "register_at_fork"
    ]
    assert [path for path, _ in calls] == ["zstream_mp/_forksafe.py"], calls


def test_no_other_fork_hook_mechanism() -> None:
    """Nor `os.register_at_fork` under another name (an alias, `getattr(os, "...")`)."""
    offenders = []
    for name in MODULES:
        if name == "zstream_mp._forksafe":
            continue
        tree = _tree(name)
        docs = _doc_nodes(tree)
        for node in _runtime_nodes(tree):
            spelled = (
                getattr(node, "id", None)
                or getattr(node, "attr", None)
                or (node.value if isinstance(node, ast.Constant) and id(node) not in docs else None)
            )
            if isinstance(spelled, str) and "register_at_fork" in spelled:
                offenders.append(f"{_rel(name)}:{getattr(node, 'lineno', '?')}")
    assert offenders == []


# --------------------------------------------------------------------------- the contract

_ENV_NAME = re.compile(r"\b(?:ZSTREAM|ZENML_STREAM)_[A-Z][A-Z_]*")
_HEADERS = (_wire.IDEMPOTENCY_KEY, _wire.LAST_EVENT_ID, _wire.RETRY_AFTER)
_PATHS = {
    _wire.EVENTS_PATH,
    _wire.STREAM_PATH,
    _wire.RUNS_PATH,
    _wire.RUN_PATH,
    _wire.RUN_END_PATH,
    _wire.HEALTH_PATH,
}
_LIMITS = {_wire.PAYLOAD_BYTES_MAX, _wire.ENVELOPE_BYTES_MAX, _wire.QUEUE_MAXSIZE}


@dataclass(frozen=True)
class Spelling:
    path: str
    line: int
    what: str
    """What the literal spells (`env ZSTREAM_SERVER`, `path /api/v1/`, ...)."""


def _doc_nodes(tree: ast.Module) -> set[int]:
    """ids of string statements: docstrings and attribute docs, which may name the contract."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    }


def _int_value(node: ast.AST) -> int | None:
    """An int literal, or a product of two (`64 * 1024`)."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Add)):
        left, right = _int_value(node.left), _int_value(node.right)
        if left is not None and right is not None:
            return left * right if isinstance(node.op, ast.Mult) else left + right
    return None


def spellings(name: str) -> list[Spelling]:
    """Contract literals written out in `name`'s code (docstrings do not count)."""
    return _spellings(_tree(name), _rel(name))


def _spellings(tree: ast.Module, path: str) -> list[Spelling]:
    docs = _doc_nodes(tree)
    out: list[Spelling] = []
    counted: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) in docs:
                continue
            text = node.value
            out += [Spelling(path, node.lineno, f"env {m}") for m in _ENV_NAME.findall(text)]
            if text in _PATHS:
                out.append(Spelling(path, node.lineno, f"path {text}"))
            elif "/api/v1/" in text:
                out.append(Spelling(path, node.lineno, "path /api/v1/ in a longer string"))
            # A header name used as one (a key, or `Name: value`); prose may mention it.
            lowered = text.lower()
            out += [
                Spelling(path, node.lineno, f"header {h}")
                for h in _HEADERS
                if lowered == h.lower() or f"{h.lower()}:" in lowered
            ]
            if text == _wire.AUTHORIZATION or text.startswith("Bearer "):
                out.append(Spelling(path, node.lineno, f"header {text.split()[0]}"))
        elif isinstance(node, ast.BinOp | ast.Constant) and id(node) not in counted:
            value = _int_value(node)
            if value in _LIMITS:
                counted.update(id(n) for n in ast.walk(node))
                out.append(Spelling(path, node.lineno, f"limit {value}"))
        elif isinstance(node, ast.Set | ast.Tuple | ast.List):
            kinds = {
                e.value
                for e in node.elts
                if isinstance(e, ast.Constant) and e.value in _wire.RESERVED_KINDS
            }
            if len(kinds) >= 2:
                out.append(Spelling(path, node.lineno, f"reserved kinds {sorted(kinds)}"))
    return out


ALLOWED: dict[tuple[str, str], str] = {
    # Same value, another meaning.
    ("zstream_mp/consumer.py", "limit 65536"): "the consumer's dedupe window, not a limit",
    ("zstream_mp/_recovery/spool.py", "limit 4096"): "the size of a spool's state page",
    ("zstream_mp/_stats.py", "limit 4096"): "the size of a counter page",
    ("zstream_mp/_recovery/statedir.py", "limit 65536"): "a read's chunk size",
    ("zstream_mp/_transport.py", "limit 65536"): "how much of a response the sender reads",
    ("zstream_mp/server/config.py", "limit 4096"): "the default connection cap",
    ("zstream_mp/server/ui_session.py", "limit 4096"): "the page's login body cap",
}
"""(module or package prefix, what): why it may stay. Keep it short; remove entries as the
modules they name import from `_wire`."""


def _allowed(spelling: Spelling) -> bool:
    return any(
        spelling.path.startswith(prefix) and spelling.what == what for prefix, what in ALLOWED
    )


def test_wire_defines_what_the_contract_check_looks_for() -> None:
    assert _wire.PAYLOAD_BYTES_MAX == 65_536
    assert _wire.ENVELOPE_BYTES_MAX == 69_632
    assert {"end", "gap", "error", "cursor", "system"} == _wire.RESERVED_KINDS
    assert "/api/v1/" in _wire.EVENTS_PATH
    env = [v for k, v in vars(_wire).items() if k.startswith("ENV_")]
    assert env and all(_ENV_NAME.fullmatch(v) for v in env)


def test_contract_literals_live_in_wire_only() -> None:
    found = [
        s
        for name in MODULES
        if name != "zstream_mp._wire"
        for s in spellings(name)
        if not _allowed(s)
    ]
    assert not found, "contract literals outside _wire.py (import them from _wire):\n" + "\n".join(
        f"  {s.path}:{s.line}: {s.what}" for s in found
    )


def test_every_allowance_is_still_needed() -> None:
    """An allowance whose literal is gone should go too, so the list only ever shrinks.

    A warning rather than a failure: the entries name modules other branches are fixing,
    and a merge that fixes one must not turn the suite red before the list is pruned.
    """
    every = [s for name in MODULES if name != "zstream_mp._wire" for s in spellings(name)]
    stale = [
        key
        for key in ALLOWED
        if not any(s.path.startswith(key[0]) and s.what == key[1] for s in every)
    ]
    if stale:
        warnings.warn(
            f"remove these ALLOWED entries, nothing needs them now: {stale}", stacklevel=1
        )


def test_the_contract_check_finds_literals() -> None:
    source = (
        'X = "ZSTREAM_SERVER"\nY = 64 * 1024\nZ = {"end", "gap"}\nH = {"Idempotency-Key": 1}\n'
        'P = "/api/v1/runs/{run_id}/events"\nA = f"Bearer {X}"\nR = "Retry-After: 5"\n'
        'M = "Idempotency-Key records kept"\n'
        'def f():\n    """Mentions ZSTREAM_TOKEN, Retry-After and 65536 in a docstring."""\n'
    )
    found = sorted(s.what for s in _spellings(ast.parse(source), "x.py"))
    assert found == [
        "env ZSTREAM_SERVER",
        "header Bearer",
        "header Idempotency-Key",
        "header Retry-After",
        "limit 65536",
        "path /api/v1/runs/{run_id}/events",
        "reserved kinds ['end', 'gap']",
    ]


# --------------------------------------------------------------------------- exported members

PUBLIC_MODULES = ("zstream_mp", "zstream_mp.errors", "zstream_mp.consumer")


def test_all_exports_exist_and_are_public() -> None:
    for name in zstream_mp.__all__:
        assert hasattr(zstream_mp, name), name
        assert not name.startswith("_") or name == "__version__", name


def test_public_members_are_exported() -> None:
    """Every public name of the package root is in `__all__` (modules aside)."""
    exported = set(zstream_mp.__all__)
    public = {
        name
        for name, value in vars(zstream_mp).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    }
    assert public == exported - {"__version__"}


@pytest.mark.parametrize("module_name", [*PUBLIC_MODULES, "zstream_mp.server"])
def test_public_module_all_is_sorted_and_resolves(module_name: str) -> None:
    if module_name == "zstream_mp.server":
        pytest.importorskip("starlette", reason="the server extra is not installed")
    module = importlib.import_module(module_name)
    names = list(getattr(module, "__all__", []))
    assert names, f"{module_name} has no __all__"
    assert names == sorted(names), f"{module_name}.__all__ is not sorted"
    assert len(set(names)) == len(names), f"{module_name}.__all__ has duplicates"
    for name in names:
        assert hasattr(module, name), f"{module_name}.__all__ names missing {name}"


def test_every_public_error_lives_in_errors() -> None:
    from zstream_mp import errors

    for name in zstream_mp.__all__:
        value = getattr(zstream_mp, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            assert value.__module__ == "zstream_mp.errors", name
            assert name in errors.__all__, name
            assert issubclass(value, errors.ZStreamError), name


def test_the_error_hierarchy_is_drawn_whole() -> None:
    """Every error class is exported by `errors` and drawn in its docstring."""
    from zstream_mp import errors

    defined = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, errors.ZStreamError)
    }
    assert defined == set(errors.__all__)
    drawing = errors.__doc__ or ""
    assert [name for name in sorted(defined) if name not in drawing] == []


# --------------------------------------------------------------------------- seams

RECOVERY = "zstream_mp._recovery"
RECOVERY_OPEN_TO_OTHERS = {
    f"{RECOVERY}.statedir": "the state dir: the context wing keeps its handoff files there",
    f"{RECOVERY}.liveness": "process identity: the context wing checks its ancestors",
    f"{RECOVERY}.registry": "a process's state registers itself",
    f"{RECOVERY}.spill": "a process's state owns its spill",
    f"{RECOVERY}.durable": "durable mode's queue is one of the two queues",
}
"""The recovery modules another wing may import; the rest only through the façade."""


def test_the_recovery_wing_is_reached_through_its_facade() -> None:
    found = []
    for name in MODULES:
        if name == RECOVERY or name.startswith(RECOVERY + "."):
            continue
        for target in imports_of(name):
            if target.startswith(RECOVERY + ".") and target not in RECOVERY_OPEN_TO_OTHERS:
                found.append(f"{_rel(name)} imports {target}")
    assert not found, "use the façade (zstream_mp._recovery):\n" + "\n".join(found)


QUEUES = {"zstream_mp._queue", "zstream_mp._recovery.durable"}
_QUEUE_NAMES = {"queue", "_queue", "q"}


def _queue_reaches(tree: ast.AST, label: str) -> Iterator[str]:
    """`<a queue>._private` anywhere in `tree`: a reach past the queue's seam."""
    for node in _runtime_nodes(tree):
        if not (isinstance(node, ast.Attribute) and node.attr.startswith("_")):
            continue
        owner = node.value
        owner_name = (
            owner.id
            if isinstance(owner, ast.Name)
            else owner.attr
            if isinstance(owner, ast.Attribute)
            else None
        )
        if owner_name in _QUEUE_NAMES and not node.attr.startswith("__"):
            yield f"{label}:{node.lineno}: {owner_name}.{node.attr}"


def test_nothing_outside_a_queue_touches_its_insides() -> None:
    found = [
        hit
        for name in MODULES
        if name not in QUEUES
        for hit in _queue_reaches(_tree(name), _rel(name))
    ]
    assert not found, "go through the Queue protocol (zstream_mp._queue):\n" + "\n".join(found)


def test_the_queue_check_finds_a_reach() -> None:
    tree = ast.parse("def f(st):\n    with st.queue._lock:\n        st.queue.count('sent')\n")
    assert list(_queue_reaches(tree, "x")) == ["x:2: queue._lock"]


# --------------------------------------------------------------------------- private names


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _defined_names(tree: ast.AST) -> set[str]:
    """Every name a module gives a value: functions, classes, assignments, `self.x = ...`."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            found.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            found.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            found.add(node.attr)
        elif isinstance(node, ast.arg):
            found.add(node.arg)
        elif isinstance(node, ast.ImportFrom | ast.Import):
            found.update((a.asname or a.name).split(".")[0] for a in node.names)
    return found


PRIVATE_READS_ALLOWED: dict[tuple[str, str], str] = {
    (f"{RECOVERY}.durable", name): "DurableQueue extends EventQueue and shares its state"
    for name in ("_lock", "_muted", "_counters", "_taker", "_has_work", "_drained")
}
"""(module, private name it reads from another module): why. Keep it short."""


def private_reads(sources: dict[str, ast.AST]) -> list[str]:
    """`x._name` or `from m import _name` in one module, where `_name` belongs to another."""
    defined = {name: _defined_names(tree) for name, tree in sources.items()}
    found: list[str] = []
    for name, tree in sources.items():
        elsewhere = {n for other, names in defined.items() if other != name for n in names}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                attr = node.attr
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("zstream_mp"):
                for alias in node.names:
                    target = f"{node.module}.{alias.name}"
                    if _private(alias.name) and target not in sources:
                        found.append(
                            f"{name}:{node.lineno}: from {node.module} import {alias.name}"
                        )
                continue
            else:
                continue
            if (
                _private(attr)
                and attr not in defined[name]
                and attr in elsewhere
                and (name, attr) not in PRIVATE_READS_ALLOWED
            ):
                found.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_module_reads_another_modules_private_names() -> None:
    found = private_reads({name: _tree(name) for name in MODULES})
    assert not found, "a private name read across modules (make it public):\n" + "\n".join(found)


def test_the_private_check_finds_a_reach() -> None:
    sources = {
        "zstream_mp.a": ast.parse("_state = 1\ndef _hidden(): pass\n"),
        "zstream_mp.b": ast.parse(
            "from zstream_mp import a\nfrom zstream_mp.a import _hidden\nx = a._state\n"
        ),
    }
    assert private_reads(sources) == [
        "zstream_mp.b:2: from zstream_mp.a import _hidden",
        "zstream_mp.b:3: a._state",
    ]


# --------------------------------------------------------------------------- size

MODULE_LINES_MAX = 450
"""A module longer than this has more than one job; split it by job."""


def test_every_module_is_small() -> None:
    long = {
        _rel(name): lines
        for name, path in MODULES.items()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MODULE_LINES_MAX
    }
    assert long == {}, f"modules over {MODULE_LINES_MAX} lines: {long}"


# --------------------------------------------------------------------------- exceptions

EXCEPTIONS_ELSEWHERE: dict[tuple[str, str], str] = {}
"""Public exception classes outside `errors.py`, and why. Keep it short."""


def _exception_classes(sources: dict[str, ast.AST]) -> Iterator[tuple[str, str]]:
    """(module, class) of every class that derives, within the package, from an exception."""
    bases = {
        node.name: (module, [ast.unparse(b).rpartition(".")[2] for b in node.bases])
        for module, tree in sources.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
    }

    def is_exception(name: str, seen: frozenset[str] = frozenset()) -> bool:
        if name in seen:
            return False
        if name not in bases:
            return name.endswith(("Error", "Exception")) or name in {"KeyboardInterrupt"}
        return any(is_exception(b, seen | {name}) for b in bases[name][1])

    for name, (module, _) in bases.items():
        if is_exception(name):
            yield module, name


def test_every_exception_is_public_in_errors_or_private() -> None:
    found = [
        f"{module}.{name}"
        for module, name in _exception_classes({n: _tree(n) for n in MODULES})
        if module != "zstream_mp.errors"
        and not _private(name)
        and (module, name) not in EXCEPTIONS_ELSEWHERE
    ]
    assert not found, "put it in errors.py (and its drawing), or name it _Private:\n" + "\n".join(
        found
    )


def test_the_exception_check_finds_classes_by_their_bases() -> None:
    sources = {
        "zstream_mp.a": ast.parse("class Base(ValueError): pass\nclass _Mine(Exception): pass\n"),
        "zstream_mp.b": ast.parse("from zstream_mp.a import Base\nclass Child(Base): pass\n"),
    }
    assert sorted(_exception_classes(sources)) == [
        ("zstream_mp.a", "Base"),
        ("zstream_mp.a", "_Mine"),
        ("zstream_mp.b", "Child"),
    ]


# --------------------------------------------------------------------------- the test tree

TESTS = ROOT / "tests"
_PATH_EDITS = {"insert", "append", "extend", "remove", "pop", "clear", "__setitem__"}
_PATH_EDIT_TEXT = re.compile(
    r"\bsys\.path\s*(?:\.\s*(?:insert|append|extend)\b|\+=|=(?!=)|\[[^\]]*\]\s*=(?!=))"
)


def _is_sys_path(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    )


def _sys_path_edits(tree: ast.AST, label: str) -> Iterator[str]:
    """Code that changes `sys.path`, or a child's source text (`-c`) that would."""
    for node in ast.walk(tree):
        hit = False
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            hit = node.func.attr in _PATH_EDITS and _is_sys_path(node.func.value)
            hit = hit or (node.func.attr == "addsitedir")
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            hit = any(
                _is_sys_path(t) or (isinstance(t, ast.Subscript) and _is_sys_path(t.value))
                for t in targets
            )
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            hit = bool(_PATH_EDIT_TEXT.search(node.value))
        if hit:
            yield f"{label}:{getattr(node, 'lineno', '?')}"


def test_nothing_under_tests_edits_sys_path() -> None:
    found = [
        hit
        for path in sorted(TESTS.rglob("*.py"))
        if path != Path(__file__).resolve()  # this file's examples of what the check finds
        for hit in _sys_path_edits(
            ast.parse(path.read_text(encoding="utf-8"), str(path)), str(path.relative_to(ROOT))
        )
    ]
    assert not found, (
        "tests import through `pythonpath` in pyproject.toml; a child program gets it from "
        "`helpers.programs.env()`:\n" + "\n".join(found)
    )


def test_the_sys_path_check_finds_an_edit() -> None:
    source = (
        "import sys, site\n"
        "sys.path.insert(0, 'x')\n"
        "sys.path += ['y']\n"
        "sys.path[0:0] = ['z']\n"
        "site.addsitedir('w')\n"
        "CHILD = 'import sys; sys.path.append(\"v\")'\n"
        "print(sys.path[0], 'sys.path is read, never written')\n"
    )
    assert sorted(h.split(":")[1] for h in _sys_path_edits(ast.parse(source), "x")) == [
        "2",
        "3",
        "4",
        "5",
        "6",
    ]


def test_the_test_tree_has_one_place_for_each_kind_of_file() -> None:
    """Test modules and conftests in the suites, what they share in `tests/helpers/`, what
    runs as a child process in `tests/programs/`; nothing else."""
    shared = (TESTS / "helpers", TESTS / "programs")
    stray = [
        str(path.relative_to(ROOT))
        for path in sorted(TESTS.rglob("*.py"))
        if not any(path.is_relative_to(d) for d in shared)
        and not path.name.startswith("test_")
        and path.name not in ("conftest.py", "__init__.py")
    ]
    assert not stray, "move these to tests/helpers/ or tests/programs/:\n" + "\n".join(stray)


# --------------------------------------------------------------------------- docstrings


def rst_literals(source: str) -> list[int]:
    """Lines of docstrings that use RST's double backticks (the docs site renders Markdown)."""
    found: list[int] = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and (doc := ast.get_docstring(node, clean=False))
            and "``" in doc
        ):
            found.append(node.body[0].lineno)
    return found


def test_docstrings_use_one_convention() -> None:
    """Markdown single backticks everywhere: mkdocstrings renders the docstrings as Markdown."""
    files = [
        *PACKAGE.rglob("*.py"),
        *(ROOT / "tests").rglob("*.py"),
        *(ROOT / "benchmarks").rglob("*.py"),
    ]
    offenders = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in files
        for line in rst_literals(path.read_text())
    ]
    assert not offenders, f"write `x`, not ``x``, in: {offenders}"


def test_the_docstring_check_finds_double_backticks() -> None:
    assert rst_literals('def f():\n    """Call ``g``."""\n') == [2]
    assert rst_literals('def f():\n    """Call `g`."""\n') == []
