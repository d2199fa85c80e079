"""The `where` language: compiled once at load into a tree of Python closures.

Routing text comes from operators and from a control topic, so it is never evaluated as Python:
`syntax` parses it with a grammar of its own (see there), and this module turns the tree into
closures that only read record values and apply a fixed set of operations. A record is any
Mapping of field names to decoded Avro values (fastavro dicts).

Semantics (the operator-facing contract; the default routes rely on them):

- A field the record lacks reads as null; `exists(field)` is true when the record has the
  field, even when its value is null (a record written with an older schema lacks new fields).
- Null: a comparison involving null is false, `!=` included (`x != 1` is false when x is null:
  use `x is null` / `x is not null`); `in` and `not in` are false for null; arithmetic with null
  gives null. Comparing with the literal null (`x == null`) is refused at load: it can never
  hold.
- Truthiness, wherever a condition is expected (`and`, `or`, `not`, the whole `where`): null is
  false, booleans are themselves, numbers are true when non-zero. So the 0/1 longs of the
  reading work as flags: `anomaly_flag`, `not anomaly_flag`, `anomaly_flag == true`,
  `anomaly_flag == false` (`==`/`!=` between a boolean and a number compare the number's
  truthiness). Strings and timestamps are not conditions: using one as such is an error.
- `and` / `or` short-circuit and give booleans.
- Comparisons: numbers with numbers (int and float mix), strings with strings (code-point
  order), timestamps with timestamps, booleans with booleans (equality only). Any other mix
  (a string with a number, ...) raises EvaluationError: silently false would hide a typo'd
  literal or a changed column type. Comparisons do not chain (`a < b < c` is a syntax error).
- `x in [...]` holds a list of literals of one kind; it means `x == item` for some item, with
  the same rules.
- Arithmetic (`+ - * /` and `%`, Python's modulo with the sign of the divisor) takes numbers
  only; `/` is true division; dividing by zero raises EvaluationError.
- Constant sub-expressions are computed at load, so `1 / 0` or `'a' > 1` fail at load.

EvaluationError is a record-level problem: the router sends that record to the dead-letter
topic for that route. Its message names the expression and the values of the fields it reads.
"""

from __future__ import annotations

import difflib
import operator
from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from typing import Any

from stream_apps.routing.syntax import (
    MAX_DEPTH,
    MAX_EXPRESSION_CHARS,
    Binary,
    BoolOp,
    Const,
    Exists,
    ExpressionError,
    FieldRef,
    IsNull,
    Membership,
    Node,
    Unary,
    field_refs,
    parse,
)

__all__ = [
    "MAX_DEPTH",
    "MAX_EXPRESSION_CHARS",
    "EvaluationError",
    "Expression",
    "ExpressionError",
    "compile_expression",
]

Fn = Callable[[Mapping[str, Any]], Any]
_PREVIEW_CHARS = 40
_MAX_SHOWN_FIELDS = 8
_MISSING = object()


class EvaluationError(ValueError):
    """A record on which an expression cannot be evaluated (types that do not compare, / 0).

    Raised inside closures with only `reason`; `Expression` re-raises it with the expression
    text and the values of the fields it reads, for the dead-letter header.
    """

    def __init__(self, reason: str, expression: str = "", values: str = "") -> None:
        self.reason = reason
        self.expression = expression
        self.values = values
        message = reason
        if expression:
            message += f" in {expression!a}"
        if values:
            message += f" with {values}"
        super().__init__(message)


class Expression:
    """A compiled `where` expression. Immutable; safe to share between threads."""

    __slots__ = ("_test", "_value", "fields", "text")

    def __init__(self, text: str, fields: frozenset[str], value: Fn, test: Fn) -> None:
        self.text = text
        self.fields = fields
        self._value = value
        self._test = test

    def evaluate(self, record: Mapping[str, Any]) -> Any:
        """The expression's value on `record`; EvaluationError when it has none."""
        try:
            return self._value(record)
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise self._explain(exc, record) from None

    def matches(self, record: Mapping[str, Any]) -> bool:
        """True when the expression holds on `record` (truthiness as documented above)."""
        try:
            return self._test(record)
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise self._explain(exc, record) from None

    def _explain(self, exc: Exception, record: Mapping[str, Any]) -> EvaluationError:
        # Python's own TypeError/ArithmeticError (aware vs naive datetimes, float overflow)
        # are record problems too: the router must never crash on a record.
        reason = exc.reason if isinstance(exc, EvaluationError) else f"{exc}"
        names = sorted(self.fields)[:_MAX_SHOWN_FIELDS]
        shown = []
        for name in names:
            value = record.get(name, _MISSING)
            shown.append(f"{name} missing" if value is _MISSING else f"{name}={_preview(value)}")
        return EvaluationError(reason, self.text, ", ".join(shown))

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"


def compile_expression(text: str, fields: Collection[str]) -> Expression:
    """Parse and compile `text`; every field it names must be one of `fields`.

    Raises ExpressionError (syntax, limits, unknown field, a constant part that cannot be
    evaluated) with the column and a caret line.
    """
    tree = parse(text)
    known = fields if isinstance(fields, set | frozenset | dict) else set(fields)
    for ref in field_refs(tree):
        if ref.name not in known:
            raise ExpressionError(
                f"unknown field '{ref.name}'{_suggestion(ref.name, known)}",
                text,
                ref.position,
                unknown_field=True,
            )
    compiler = _Compiler(text)
    return Expression(
        text,
        frozenset(ref.name for ref in field_refs(tree)),
        compiler.value(tree),
        compiler.test(tree),
    )


def _suggestion(name: str, known: Collection[str]) -> str:
    if name.lower() in ("true", "false", "null"):
        return f" (keywords are lowercase: did you mean {name.lower()}?)"
    by_folded = {k.lower(): k for k in known}
    close = by_folded.get(name.lower())
    if close is None:
        matches = difflib.get_close_matches(name, list(known), n=1)
        close = matches[0] if matches else None
    return f" (did you mean '{close}'?)" if close else ""


# ---- value semantics ----------------------------------------------------------------------


def _kind(value: Any) -> str:
    cls = value.__class__
    if value is None:
        return "null"
    if cls is bool:
        return "boolean"
    if cls is int or cls is float:
        return "number"
    if cls is str:
        return "string"
    if isinstance(value, datetime):
        return "timestamp"
    if isinstance(value, bytes):
        return "bytes"
    return cls.__name__


def _preview(value: Any) -> str:
    """ASCII-only and short: these strings end up in dead-letter headers."""
    text = ascii(value) if not isinstance(value, datetime) else value.isoformat()
    return text if len(text) <= _PREVIEW_CHARS else text[: _PREVIEW_CHARS - 3] + "..."


def _mismatch(what: str, a: Any, b: Any) -> EvaluationError:
    return EvaluationError(f"cannot {what} {_kind(a)} {_preview(a)} with {_kind(b)} {_preview(b)}")


def truth(value: Any) -> bool:
    """Truthiness of a value where a condition is expected (see the module docstring)."""
    cls = value.__class__
    if cls is bool:
        return value
    if cls is int or cls is float:
        return value != 0
    if value is None:
        return False
    raise EvaluationError(
        f"{_kind(value)} {_preview(value)} is not a condition (only booleans and numbers are)"
    )


def _equal(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return False
    ka, kb = _kind(a), _kind(b)
    if ka == kb:
        return a == b
    if ka == "boolean" and kb == "number":
        return a == (b != 0)
    if kb == "boolean" and ka == "number":
        return b == (a != 0)
    raise _mismatch("compare", a, b)


def _not_equal(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return False
    return not _equal(a, b)


_ORDERED = frozenset({"number", "string", "timestamp"})


def _ordering(compare: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def ordered(a: Any, b: Any) -> bool:
        if a is None or b is None:
            return False
        ka = _kind(a)
        if ka == _kind(b) and ka in _ORDERED:
            return compare(a, b)
        if ka == "boolean" and _kind(b) == "boolean":
            raise EvaluationError("booleans cannot be ordered")
        raise _mismatch("compare", a, b)

    return ordered


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": _equal,
    "!=": _not_equal,
    "<": _ordering(operator.lt),
    "<=": _ordering(operator.le),
    ">": _ordering(operator.gt),
    ">=": _ordering(operator.ge),
}
_FAST_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_MIRROR = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


def _arithmetic(symbol: str, apply: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def arithmetic(a: Any, b: Any) -> Any:
        if a is None or b is None:
            return None
        ca, cb = a.__class__, b.__class__
        if (ca is int or ca is float) and (cb is int or cb is float):
            try:
                return apply(a, b)
            except ZeroDivisionError:
                raise EvaluationError(f"division by zero ({_preview(a)} {symbol} 0)") from None
        raise _mismatch(f"apply '{symbol}' to", a, b)

    return arithmetic


_ARITHMETIC = {
    symbol: _arithmetic(symbol, apply)
    for symbol, apply in (
        ("+", operator.add),
        ("-", operator.sub),
        ("*", operator.mul),
        ("/", operator.truediv),
        ("%", operator.mod),
    )
}


def _negate(value: Any) -> Any:
    if value is None:
        return None
    if value.__class__ is int or value.__class__ is float:
        return -value
    raise EvaluationError(f"cannot negate {_kind(value)} {_preview(value)}")


# ---- compiler -----------------------------------------------------------------------------


class _Compiler:
    """Tree to closures. `value` gives the expression's value, `test` its truthiness.

    The common shapes (`field op literal`, a bare field as a flag, `field in [...]`) get
    closures of their own that skip the generic type dispatch when the record's value has the
    expected class: the router evaluates several of these per record.
    """

    def __init__(self, text: str, fold: bool = True) -> None:
        self.text = text
        self.folds = fold

    def value(self, node: Node) -> Fn:
        if self.folds and node.constant and not isinstance(node, Const):
            return self.value(self.fold(node))
        if isinstance(node, Const):
            constant = node.value
            return lambda record: constant
        if isinstance(node, FieldRef):
            name = node.name
            return lambda record: record.get(name)
        if isinstance(node, Unary) and node.op == "-":
            operand = self.value(node.operand)
            return lambda record: _negate(operand(record))
        if isinstance(node, Binary) and node.op in _ARITHMETIC:
            apply = _ARITHMETIC[node.op]
            left, right = self.value(node.left), self.value(node.right)
            return lambda record: apply(left(record), right(record))
        return self.test(node)  # conditions: their value is their truth

    def test(self, node: Node) -> Fn:
        if self.folds and node.constant:
            try:
                result = truth(self.fold(node).value)
            except EvaluationError as exc:
                raise ExpressionError(exc.reason, self.text, node.position) from None
            return lambda record: result
        if isinstance(node, FieldRef):
            return _flag(node.name)
        if isinstance(node, Exists):
            name = node.name
            return lambda record: name in record
        if isinstance(node, Unary) and node.op == "not":
            operand = self.test(node.operand)
            return lambda record: not operand(record)
        if isinstance(node, BoolOp):
            return _any(self, node) if node.op == "or" else _all(self, node)
        if isinstance(node, Binary) and node.op in _COMPARE:
            return self.comparison(node)
        if isinstance(node, Membership):
            return self.membership(node)
        if isinstance(node, IsNull):
            return self.is_null(node)
        value = self.value(node)
        return lambda record: truth(value(record))

    def fold(self, node: Node) -> Const:
        """The constant `node` computed now: an error in it is a load-time error."""
        if isinstance(node, Const):
            return node
        compute = _Compiler(self.text, fold=False).value(node)
        try:
            return Const(node.position, value=compute({}))
        except EvaluationError as exc:
            raise ExpressionError(exc.reason, self.text, node.position) from None

    def comparison(self, node: Binary) -> Fn:
        op, left, right = node.op, node.left, node.right
        for side in (left, right):
            if isinstance(side, Const) and side.value is None:
                raise ExpressionError(
                    f"comparing with null never holds; use 'is null' or 'is not null' "
                    f"(column {node.position + 1})",
                    self.text,
                    node.position,
                )
            if isinstance(side, Const) and side.value.__class__ is bool and op not in ("==", "!="):
                raise ExpressionError(
                    f"booleans cannot be ordered (column {node.position + 1})",
                    self.text,
                    node.position,
                )
        if isinstance(right, FieldRef) and isinstance(left, Const):
            op, left, right = _MIRROR[op], right, left
        slow = _COMPARE[op]
        if isinstance(left, FieldRef) and isinstance(right, Const):
            return _field_versus(left.name, op, right.value, slow)
        left_fn, right_fn = self.value(left), self.value(right)
        return lambda record: slow(left_fn(record), right_fn(record))

    def membership(self, node: Membership) -> Fn:
        values, negated = node.values, node.negated
        members = frozenset(values)
        kinds = {v.__class__ for v in values}
        fast = frozenset({int, float}) if kinds <= {int, float} else frozenset(kinds)
        if not values:
            fast = frozenset()

        def member(value: Any) -> bool:
            return any(_equal(value, item) for item in values)

        if isinstance(node.operand, FieldRef):
            name = node.operand.name
            get = None
        else:
            name, get = "", self.value(node.operand)

        def test(record: Mapping[str, Any]) -> bool:
            value = record.get(name) if get is None else get(record)
            if value.__class__ in fast:
                return (value in members) is not negated
            if value is None:
                return False
            return member(value) is not negated

        return test

    def is_null(self, node: IsNull) -> Fn:
        negated = node.negated
        if isinstance(node.operand, FieldRef):
            name = node.operand.name
            if negated:
                return lambda record: record.get(name) is not None
            return lambda record: record.get(name) is None
        operand = self.value(node.operand)
        if negated:
            return lambda record: operand(record) is not None
        return lambda record: operand(record) is None


def _flag(name: str) -> Fn:
    def flag(record: Mapping[str, Any]) -> bool:
        value = record.get(name)
        if value.__class__ is int:
            return value != 0
        return truth(value)

    return flag


def _field_versus(name: str, op: str, constant: Any, slow: Callable[[Any, Any], bool]) -> Fn:
    """`field op constant`: the fast path when the value's class is the constant's kind."""
    fast = _FAST_COMPARE[op]
    if constant.__class__ is bool:
        # `flag == true`: numbers compare by truthiness, booleans as they are.
        def flag_test(record: Mapping[str, Any]) -> bool:
            value = record.get(name)
            if value.__class__ is int:
                return fast(value != 0, constant)
            return slow(value, constant)

        return flag_test
    if constant.__class__ is str:

        def text_test(record: Mapping[str, Any]) -> bool:
            value = record.get(name)
            if value.__class__ is str:
                return fast(value, constant)
            return slow(value, constant)

        return text_test

    def number_test(record: Mapping[str, Any]) -> bool:
        value = record.get(name)
        cls = value.__class__
        if cls is float or cls is int:
            return fast(value, constant)
        return slow(value, constant)

    return number_test


def _any(compiler: _Compiler, node: BoolOp) -> Fn:
    tests = [compiler.test(operand) for operand in node.operands]
    if len(tests) == 2:
        a, b = tests
        return lambda record: a(record) or b(record)
    if len(tests) == 3:
        a, b, c = tests
        return lambda record: a(record) or b(record) or c(record)

    def any_test(record: Mapping[str, Any]) -> bool:
        return any(test(record) for test in tests)

    return any_test


def _all(compiler: _Compiler, node: BoolOp) -> Fn:
    tests = [compiler.test(operand) for operand in node.operands]
    if len(tests) == 2:
        a, b = tests
        return lambda record: a(record) and b(record)
    if len(tests) == 3:
        a, b, c = tests
        return lambda record: a(record) and b(record) and c(record)

    def all_test(record: Mapping[str, Any]) -> bool:
        return all(test(record) for test in tests)

    return all_test
