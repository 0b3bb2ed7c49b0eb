"""A guarded Jinja sandbox for untrusted templates (chat templates from downloaded models, prompt file bodies).

jinja2's ImmutableSandboxedEnvironment (jinja2>=3.1.6, whose str.format and |attr escapes are closed) plus a budget
for every render: loop iterations, calls, wall time, the size of any value a template builds, and the size of its
output. Anything over the budget, or any sandbox violation, is a LoadError("unsafe ...: ...").
"""

from __future__ import annotations

import functools
import json
import re
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from jinja2 import StrictUndefined, TemplateError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import Namespace

from chatcli.errors import LoadError

# The render budget. Real chat templates stay far below each of these.
MAX_STEPS = 1_000_000  # loop iterations + calls + attribute lookups
MAX_SECONDS = 2.0
MAX_VALUE = 4_000_000  # characters (or items) in any one string or list a template builds
MAX_INT = 1_000_000  # an integer argument to a call or filter (a width, a count)
MAX_INT_BITS = 4096
_GUARD = "__chatcli_loop_guard"
_CONCAT = "__chatcli_concat"


class TemplateBudgetError(SecurityError):
    """A template ran past its render budget."""


class TemplateRaised(TemplateError):
    """The template itself called raise_exception(message)."""


_state = threading.local()


def _tick(n: int = 1) -> None:
    budget = getattr(_state, "budget", None)
    if budget is None:
        return
    budget[0] += n
    if budget[0] > MAX_STEPS:
        raise TemplateBudgetError(f"it ran past {MAX_STEPS:,} steps (a runaway loop?)")
    if budget[0] % 512 < n and time.monotonic() > budget[1]:
        raise TemplateBudgetError(f"it ran for more than {MAX_SECONDS:g} s (a runaway loop?)")


def _check_size(value: Any) -> Any:
    if isinstance(value, (str, bytes, list, tuple, dict)) and len(value) > MAX_VALUE:
        raise TemplateBudgetError(f"it built a value of {len(value):,} items (limit {MAX_VALUE:,})")
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise TemplateBudgetError(f"it built an integer of {value.bit_length():,} bits")
    return value


def _check_args(args: Iterable[Any]) -> None:
    for a in args:
        if isinstance(a, int) and not isinstance(a, bool) and abs(a) > MAX_INT:
            raise TemplateBudgetError(f"it passed {a} as an argument (limit {MAX_INT:,})")


def _guard_iter(iterable: Any) -> Iterable[Any]:
    """Every `for` loop of a template iterates through this, so each iteration costs a step."""
    for item in iterable:
        _tick()
        yield item


def _concat(parts: Sequence[Any]) -> str:
    """The `~` operator, with the result size checked before it is built."""
    strs = [str(p) for p in parts]
    if sum(len(s) for s in strs) > MAX_VALUE:
        raise TemplateBudgetError(f"`~` would build a string over {MAX_VALUE:,} characters")
    return "".join(strs)


def _replace_size(s: str, old: str, new: str) -> int:
    count = len(s) + 1 if old == "" else s.count(old) if old else 0
    return len(s) + count * len(new)


def _guarded_filter(name: str, func: Any) -> Any:
    @functools.wraps(func)  # keeps jinja_pass_arg, which tells Jinja what to pass first
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _tick()
        _check_args(list(args) + list(kwargs.values()))
        strs = [a for a in args if isinstance(a, str)]
        if name == "replace" and len(strs) >= 3 and _replace_size(*strs[-3:]) > MAX_VALUE:
            raise TemplateBudgetError(f"|replace would build a string over {MAX_VALUE:,} characters")
        return _check_size(func(*args, **kwargs))

    return wrapper


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys: bool = False) -> str:
    # Jinja's own tojson escapes HTML; chat templates expect plain JSON, as transformers renders it.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message: Any) -> None:
    raise TemplateRaised(str(message))


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _Namespace(Namespace):
    """namespace() that refuses underscore names, so a template cannot plant dunder attributes on it."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # noqa: N805 - Namespace's own trick, so namespace(self=1) works
        self, rest = args[0], args[1:]
        for name in dict(*rest, **kwargs):
            _Namespace._check(name)
        Namespace.__init__(self, *rest, **kwargs)

    def __setitem__(self, name: str, value: Any) -> None:
        _Namespace._check(name)
        Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise SecurityError(f"a namespace attribute may not start with '_' (got {name!r})")


def _dict(*args: Any, **kwargs: Any) -> dict:
    # The bare `dict` type would hand templates a class object; a function gives them only what they need.
    return dict(*args, **kwargs)


class GuardedEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox plus a per-render budget on steps, time and value sizes."""

    intercepted_binops = frozenset(["*", "**", "+", "%"])

    def __init__(self, **options: Any) -> None:
        # trim_blocks/lstrip_blocks and loopcontrols match how transformers renders chat templates, token for token.
        super().__init__(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"], **options)
        self.filters["tojson"] = _tojson
        self.filters = {name: _guarded_filter(name, f) for name, f in self.filters.items()}
        self.globals.update(
            {
                "raise_exception": _raise_exception,
                "strftime_now": _strftime_now,
                "namespace": _Namespace,
                "dict": _dict,
                _GUARD: _guard_iter,
                _CONCAT: _concat,
            }
        )

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - Jinja's own signature
        """Every call a template makes: count it, refuse huge int arguments, check what it returns."""
        _tick()
        _check_args(list(args) + list(kwargs.values()))
        if getattr(__obj, "__name__", "") == "replace" and isinstance(getattr(__obj, "__self__", None), str):
            strs = [__obj.__self__] + [a for a in args[:2] if isinstance(a, str)]
            if len(strs) == 3 and _replace_size(*strs) > MAX_VALUE:
                raise TemplateBudgetError(f".replace would build a string over {MAX_VALUE:,} characters")
        return _check_size(super().call(__context, __obj, *args, **kwargs))

    def getattr(self, obj, attribute):
        _tick()
        return super().getattr(obj, attribute)

    def unsafe_undefined(self, obj, attribute):
        """Refuse outright: jinja's default renders an unsafe lookup inside str.format as '' and carries on."""
        raise SecurityError(f"access to attribute {attribute!r} of a {type(obj).__name__!r} object is unsafe")

    def getitem(self, obj, argument):
        _tick()
        return super().getitem(obj, argument)

    def call_binop(self, context, operator, left, right):
        """Refuse `*`, `**`, `+` and `%` whose result would be too big, before building it."""
        _tick()
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * max(n, 0) > MAX_VALUE:
                    raise TemplateBudgetError(f"`*` would build a value of {len(seq) * n:,} items")
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
            if right * max(abs(left).bit_length(), 1) > MAX_INT_BITS:
                raise TemplateBudgetError(f"`**` would build an integer over {MAX_INT_BITS} bits")
        if operator == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
            if len(left) + len(right) > MAX_VALUE:
                raise TemplateBudgetError(f"`+` would build a value over {MAX_VALUE:,} items")
        if operator == "%" and isinstance(left, str):
            widths = [int(w) for w in re.findall(r"%[-+ #0]*(\d+)", left)]
            if any(w > MAX_INT for w in widths) or "*" in left:
                raise TemplateBudgetError("`%` formatting with a huge or variable width")
        return _check_size(super().call_binop(context, operator, left, right))


# Chat templates get lenient undefined values, as in transformers; prompt bodies get strict ones (an error names it).
_ENVS = {False: GuardedEnvironment(), True: GuardedEnvironment(undefined=StrictUndefined)}


def _guard_ast(ast: nodes.Template) -> nodes.Template:
    """Route every for-loop through the loop guard and every `~` through the sized concat."""
    for name in ast.find_all(nodes.Name):
        if name.name in (_GUARD, _CONCAT):
            raise SecurityError(f"the template uses the reserved name {name.name}")
    for loop in ast.find_all(nodes.For):
        loop.iter = nodes.Call(nodes.Name(_GUARD, "load"), [loop.iter], [], None, None, lineno=loop.lineno)
    # Concat nodes sit inside arbitrary expressions; rewrite them in place through their parents.
    for parent in [ast, *ast.find_all(nodes.Node)]:
        for field, value in parent.iter_fields():
            if isinstance(value, nodes.Concat):
                setattr(parent, field, _concat_call(value))
            elif isinstance(value, list):
                value[:] = [_concat_call(v) if isinstance(v, nodes.Concat) else v for v in value]
    return ast


def _concat_call(node: nodes.Concat) -> nodes.Call:
    return nodes.Call(nodes.Name(_CONCAT, "load"), [nodes.List(node.nodes)], [], None, None, lineno=node.lineno)


def sandbox_env(strict: bool = False) -> GuardedEnvironment:
    """The shared guarded environment (strict: undefined names raise)."""
    return _ENVS[strict]


@functools.lru_cache(maxsize=64)
def compile_sandboxed(source: str, strict: bool = False):
    """Parse and compile SOURCE once in the guarded sandbox; raises jinja2's TemplateSyntaxError or SecurityError."""
    env = _ENVS[strict]
    return env.from_string(_guard_ast(env.parse(source)))


def run_sandboxed(template, context: dict[str, Any], output_cap: int, what: str = "chat template") -> str:
    """Render a compiled template within the budget. Budget and sandbox violations become LoadError("unsafe WHAT");
    the template's own errors (raise_exception, undefined names, TypeError...) propagate for the caller to word."""
    _state.budget = [0, time.monotonic() + MAX_SECONDS]
    out: list[str] = []
    size = 0
    try:
        for piece in template.generate(**context):
            size += len(piece)
            if size > output_cap:
                raise TemplateBudgetError(f"its output passed {output_cap:,} characters")
            out.append(piece)
    except SecurityError as e:  # includes TemplateBudgetError
        raise LoadError(f"unsafe {what}: {e}; refusing to render it") from None
    except (RecursionError, MemoryError) as e:
        raise LoadError(f"unsafe {what}: it ran out of {'stack' if isinstance(e, RecursionError) else 'memory'}"
                        "; refusing to render it") from None
    finally:
        _state.budget = None
    return "".join(out)
