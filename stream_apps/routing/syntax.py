"""Tokenizer and parser of the `where` language: text to a small tree, nothing evaluated.

Hand-written rather than borrowed from Python (`ast.parse`, `compile`, `eval`): routing text
arrives from files and from a control topic, and Python's grammar accepts far more than the
language allows (calls, attributes, lambdas, comprehensions); rejecting the excess after the
fact is how sandboxes leak. Here anything outside the grammar is a syntax error by
construction, with the column it happened at.

Grammar, loosest binding first (precedence climbing; `and`/`or` chains are flattened):

    expr        := disjunction
    disjunction := conjunction ('or' conjunction)*
    conjunction := negation ('and' negation)*
    negation    := 'not' negation | comparison
    comparison  := sum [ ('=='|'!='|'<'|'<='|'>'|'>=') sum
                       | ['not'] 'in' '[' [literal (',' literal)* [',']] ']'
                       | 'is' ['not'] 'null' ]          (comparisons do not chain)
    sum         := product (('+'|'-') product)*
    product     := unary (('*'|'/'|'%') unary)*
    unary       := '-' unary | primary
    primary     := number | string | 'true' | 'false' | 'null' | field
                 | 'exists' '(' field ')' | '(' expr ')'
    literal     := ['-'] number | string | 'true' | 'false'

Keywords are lowercase and reserved (`and or not in is null true false`); `exists` is a
keyword only when followed by '('. Size limits keep the parser's recursion, and the closures'
at run time, far below Python's recursion limit whatever the input.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

MAX_EXPRESSION_CHARS = 4096
MAX_DEPTH = 64
_MAX_NUMBER_CHARS = 40
_POINTER_WINDOW = 60

KEYWORDS = frozenset({"and", "or", "not", "in", "is", "null", "true", "false"})
COMPARISONS = frozenset({"==", "!=", "<", "<=", ">", ">="})
ARITHMETIC = frozenset({"+", "-", "*", "/", "%"})

_OR, _AND, _NOT, _COMPARE, _SUM, _PRODUCT, _NEGATE = 1, 2, 3, 4, 5, 6, 7
_BINDING = {
    "or": _OR,
    "and": _AND,
    **dict.fromkeys(COMPARISONS, _COMPARE),
    "in": _COMPARE,
    "not in": _COMPARE,
    "is": _COMPARE,
    "+": _SUM,
    "-": _SUM,
    "*": _PRODUCT,
    "/": _PRODUCT,
    "%": _PRODUCT,
}

_TOKEN = re.compile(
    r"(?P<space>\s+)"
    r"|(?P<number>(?:\d+\.\d+|\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>==|!=|<=|>=|[<>+\-*/%()\[\],])"
    r"|(?P<quote>['\"])",
    re.ASCII,
)
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t", "r": "\r", "0": "\0"}
_HEX4 = re.compile(r"[0-9A-Fa-f]{4}")
_CHARACTER_HINTS = {
    "=": "use '==' to compare",
    "!": "use 'not' to negate, '!=' to compare",
    "&": "use 'and'",
    "|": "use 'or'",
    ".": "attribute access is not supported; fields are plain names",
}


class ExpressionError(ValueError):
    """A `where` text that does not compile: syntax, an unknown field, a limit.

    `reason` is one line; str() adds the text with a caret under `column` (1-based), so the
    message stays readable when the CLI prints it under the file/line/key prefix.
    """

    def __init__(
        self, reason: str, text: str, position: int, *, unknown_field: bool = False
    ) -> None:
        self.reason = reason
        self.text = text
        self.column = position + 1
        self.unknown_field = unknown_field  # the text names a field the records lack
        super().__init__(f"{reason}\n{pointer(text, position)}")


def pointer(text: str, position: int) -> str:
    """Two indented lines: `text` (a window of it when long) and a caret under `position`."""
    flat = text.translate({ord("\n"): " ", ord("\r"): " ", ord("\t"): " "})
    start = max(0, position - _POINTER_WINDOW)
    end = min(len(flat), position + _POINTER_WINDOW)
    head = "..." if start > 0 else ""
    tail = "..." if end < len(flat) else ""
    caret = " " * (len(head) + position - start) + "^"
    return f"    {head}{flat[start:end]}{tail}\n    {caret}"


class Token(NamedTuple):
    kind: str  # "number", "string", "name", "op" or "end"
    value: Any
    position: int


# ---- tree ---------------------------------------------------------------------------------


@dataclass(eq=False)
class Node:
    """Base of the tree. `depth` and `constant` are derived, for the limits and for folding."""

    position: int
    depth: int = field(init=False, default=1)
    constant: bool = field(init=False, default=True)

    def children(self) -> tuple[Node, ...]:
        return ()

    def __post_init__(self) -> None:
        kids = self.children()
        if kids:
            self.depth = 1 + max(kid.depth for kid in kids)
            self.constant = all(kid.constant for kid in kids)


@dataclass(eq=False)
class Const(Node):
    value: Any = None


@dataclass(eq=False)
class FieldRef(Node):
    name: str = ""

    def __post_init__(self) -> None:
        self.constant = False


@dataclass(eq=False)
class Exists(Node):
    name: str = ""

    def __post_init__(self) -> None:
        self.constant = False


@dataclass(eq=False)
class Unary(Node):
    op: str = ""  # "-" or "not"
    operand: Node = None  # type: ignore[assignment]

    def children(self) -> tuple[Node, ...]:
        return (self.operand,)


@dataclass(eq=False)
class Binary(Node):
    op: str = ""  # a comparison or an arithmetic operator
    left: Node = None  # type: ignore[assignment]
    right: Node = None  # type: ignore[assignment]

    def children(self) -> tuple[Node, ...]:
        return (self.left, self.right)


@dataclass(eq=False)
class BoolOp(Node):
    op: str = ""  # "and" or "or"
    operands: tuple[Node, ...] = ()

    def children(self) -> tuple[Node, ...]:
        return self.operands


@dataclass(eq=False)
class Membership(Node):
    operand: Node = None  # type: ignore[assignment]
    values: tuple[Any, ...] = ()
    negated: bool = False

    def children(self) -> tuple[Node, ...]:
        return (self.operand,)


@dataclass(eq=False)
class IsNull(Node):
    operand: Node = None  # type: ignore[assignment]
    negated: bool = False

    def children(self) -> tuple[Node, ...]:
        return (self.operand,)


def field_refs(node: Node) -> list[FieldRef | Exists]:
    """Every field reference in the tree, in text order."""
    found: list[FieldRef | Exists] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, FieldRef | Exists):
            found.append(current)
        stack.extend(current.children())
    return sorted(found, key=lambda ref: ref.position)


# ---- tokenizer ----------------------------------------------------------------------------


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    position, size = 0, len(text)
    while position < size:
        match = _TOKEN.match(text, position)
        if match is None:
            raise _bad_character(text, position)
        kind, end = match.lastgroup, match.end()
        if kind == "number":
            tokens.append(Token("number", _number(text, position, end), position))
        elif kind == "name":
            tokens.append(Token("name", match.group(), position))
        elif kind == "op":
            tokens.append(Token("op", match.group(), position))
        elif kind == "quote":
            value, end = _string(text, position)
            tokens.append(Token("string", value, position))
        position = end
    tokens.append(Token("end", None, size))
    return tokens


def _number(text: str, start: int, end: int) -> int | float:
    literal = text[start:end]
    if end < len(text) and (text[end].isalnum() or text[end] in "_."):
        raise ExpressionError(f"invalid number at column {start + 1}", text, start)
    if len(literal) > _MAX_NUMBER_CHARS:
        raise ExpressionError(
            f"number at column {start + 1} is longer than {_MAX_NUMBER_CHARS} characters",
            text,
            start,
        )
    if "." in literal or "e" in literal or "E" in literal:
        value = float(literal)
        if not math.isfinite(value):
            raise ExpressionError(f"number at column {start + 1} is out of range", text, start)
        return value
    return int(literal)


def _string(text: str, start: int) -> tuple[str, int]:
    quote, out, i, size = text[start], [], start + 1, len(text)
    while i < size:
        ch = text[i]
        if ch == quote:
            return "".join(out), i + 1
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        escape = text[i + 1 : i + 2]
        if escape in _ESCAPES and escape:
            out.append(_ESCAPES[escape])
            i += 2
        elif escape == "u" and _HEX4.fullmatch(text, i + 2, i + 6):
            out.append(chr(int(text[i + 2 : i + 6], 16)))
            i += 6
        elif not escape:
            break
        else:
            raise ExpressionError(
                f"unknown escape '\\{escape}' at column {i + 1} "
                "(known: \\\\ \\' \\\" \\n \\t \\r \\0 \\uXXXX)",
                text,
                i,
            )
    raise ExpressionError(f"unterminated string starting at column {start + 1}", text, start)


def _bad_character(text: str, position: int) -> ExpressionError:
    ch = text[position]
    hint = _CHARACTER_HINTS.get(ch)
    if ch == "&" and text[position : position + 2] == "&&":
        hint = _CHARACTER_HINTS["&"]
    shown = repr(ch) if ch.isprintable() else f"U+{ord(ch):04X}"
    reason = f"unexpected character {shown} at column {position + 1}"
    return ExpressionError(f"{reason}: {hint}" if hint else reason, text, position)


# ---- parser -------------------------------------------------------------------------------


def parse(text: str) -> Node:
    """The tree of `text`; ExpressionError for anything outside the grammar or the limits."""
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(
            f"expression is {len(text)} characters long, above the limit of {MAX_EXPRESSION_CHARS}",
            text,
            MAX_EXPRESSION_CHARS,
        )
    return _Parser(text).parse()


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0
        self.nesting = 0

    def parse(self) -> Node:
        if self.peek().kind == "end":
            raise self.error("empty expression", self.peek())
        node = self.expression(0)
        token = self.peek()
        if token.kind != "end":
            raise self.unexpected(token, "an operator or the end of the expression")
        return node

    # -- helpers

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        self.index = min(self.index + 1, len(self.tokens) - 1)
        return token

    def error(self, reason: str, token: Token) -> ExpressionError:
        return ExpressionError(reason, self.text, token.position)

    def unexpected(self, token: Token, expected: str) -> ExpressionError:
        where = f"at column {token.position + 1}"
        if token.kind == "end":
            return self.error(f"unexpected end of expression; expected {expected}", token)
        shown = _describe(token)
        reason = f"unexpected {shown} {where}; expected {expected}"
        if token.kind == "op" and token.value == "(":
            reason = (
                f"unexpected '(' {where}: calls are not supported "
                "(the only function is exists(field))"
            )
        elif token.kind == "op" and token.value == "[":
            reason = f"unexpected '[' {where}: a list may only follow 'in' or 'not in'"
        elif (
            token.kind == "name"
            and token.value.lower() in KEYWORDS
            and token.value != token.value.lower()
        ):
            reason += f" (keywords are lowercase: '{token.value.lower()}')"
        return self.error(reason, token)

    def expect(self, value: str, expected: str) -> Token:
        token = self.peek()
        if token.kind == "op" and token.value == value:
            return self.advance()
        raise self.unexpected(token, expected)

    def make(self, node: Node, at: Token) -> Node:
        if node.depth > MAX_DEPTH:
            raise self.error(f"expression nests deeper than {MAX_DEPTH} levels", at)
        return node

    # -- grammar

    def infix(self) -> tuple[str | None, int]:
        """The binary operator at the cursor and how many tokens it spans."""
        token = self.peek()
        if token.kind == "op" and token.value in _BINDING:
            return token.value, 1
        if token.kind == "name":
            if token.value in ("and", "or", "in", "is"):
                return token.value, 1
            following = self.peek(1)
            if token.value == "not" and following.kind == "name" and following.value == "in":
                return "not in", 2
        return None, 0

    def expression(self, min_binding: int) -> Node:
        self.nesting += 1
        if self.nesting > MAX_DEPTH:
            raise self.error(f"expression nests deeper than {MAX_DEPTH} levels", self.peek())
        left = self.prefix(min_binding)
        compared = False
        while True:
            op, width = self.infix()
            if op is None or _BINDING[op] < min_binding:
                break
            token = self.peek()
            binding = _BINDING[op]
            if binding == _COMPARE:
                if compared:
                    raise self.error(
                        f"comparisons cannot be chained (column {token.position + 1}); "
                        "join them with 'and'",
                        token,
                    )
                compared = True
            for _ in range(width):
                self.advance()
            left = self.make(self.infix_node(op, left, token, binding), token)
        self.nesting -= 1
        return left

    def infix_node(self, op: str, left: Node, token: Token, binding: int) -> Node:
        position = token.position
        if op in ("and", "or"):
            right = self.expression(binding + 1)
            if isinstance(left, BoolOp) and left.op == op:
                return BoolOp(left.position, op=op, operands=(*left.operands, right))
            return BoolOp(position, op=op, operands=(left, right))
        if op in ("in", "not in"):
            return Membership(
                position, operand=left, values=self.list_literal(), negated=op == "not in"
            )
        if op == "is":
            negated = self.peek().kind == "name" and self.peek().value == "not"
            if negated:
                self.advance()
            following = self.peek()
            if not (following.kind == "name" and following.value == "null"):
                raise self.unexpected(following, "'null' (only 'is null' and 'is not null')")
            self.advance()
            return IsNull(position, operand=left, negated=negated)
        return Binary(position, op=op, left=left, right=self.expression(binding + 1))

    def prefix(self, min_binding: int) -> Node:
        token = self.advance()
        kind, value = token.kind, token.value
        if kind in ("number", "string"):
            return Const(token.position, value=value)
        if kind == "name":
            return self.name(token, min_binding)
        if kind == "op" and value == "(":
            inner = self.expression(0)
            closing = self.peek()
            if not (closing.kind == "op" and closing.value == ")"):
                raise self.unexpected(
                    closing, f"')' to close the '(' at column {token.position + 1}"
                )
            self.advance()
            return inner
        if kind == "op" and value == "-":
            operand = self.expression(_NEGATE)
            if isinstance(operand, Const) and _is_number(operand.value):
                return Const(token.position, value=-operand.value)
            return self.make(Unary(token.position, op="-", operand=operand), token)
        raise self.unexpected(token, "a value, a field or '('")

    def name(self, token: Token, min_binding: int) -> Node:
        value = token.value
        if value in ("true", "false"):
            return Const(token.position, value=value == "true")
        if value == "null":
            return Const(token.position, value=None)
        if value == "not":
            if min_binding > _NOT:
                raise self.error(
                    f"'not' at column {token.position + 1} must be in parentheses here", token
                )
            operand = self.expression(_NOT)
            return self.make(Unary(token.position, op="not", operand=operand), token)
        if value in KEYWORDS:
            raise self.unexpected(token, "a value, a field or '('")
        following = self.peek()
        if value == "exists" and following.kind == "op" and following.value == "(":
            self.advance()
            argument = self.peek()
            if argument.kind != "name" or argument.value in KEYWORDS:
                raise self.unexpected(argument, "a field name inside exists(...)")
            self.advance()
            self.expect(")", "')' after the field name of exists(...)")
            return Exists(token.position, name=argument.value)
        return FieldRef(token.position, name=value)

    def list_literal(self) -> tuple[Any, ...]:
        opening = self.expect("[", "'[' starting a list of literals after 'in'")
        values: list[Any] = []
        while not (self.peek().kind == "op" and self.peek().value == "]"):
            values.append(self.literal())
            token = self.peek()
            if token.kind == "op" and token.value == ",":
                self.advance()
            elif not (token.kind == "op" and token.value == "]"):
                raise self.unexpected(token, "',' or ']'")
        self.advance()
        kinds = {_literal_kind(v) for v in values}
        if len(kinds) > 1:
            raise self.error(
                f"the list at column {opening.position + 1} mixes "
                f"{' and '.join(sorted(kinds))}; use one kind of value",
                opening,
            )
        return tuple(values)

    def literal(self) -> Any:
        token = self.advance()
        if token.kind in ("number", "string"):
            return token.value
        if token.kind == "op" and token.value == "-" and self.peek().kind == "number":
            return -self.advance().value
        if token.kind == "name" and token.value in ("true", "false"):
            return token.value == "true"
        if token.kind == "name" and token.value == "null":
            raise self.error(
                f"null at column {token.position + 1} never matches in a list; "
                "use 'is null' instead",
                token,
            )
        raise self.unexpected(token, "a literal (number, string, true or false)")


def _is_number(value: Any) -> bool:
    return value.__class__ is int or value.__class__ is float


def _literal_kind(value: Any) -> str:
    if value.__class__ is bool:
        return "booleans"
    return "strings" if value.__class__ is str else "numbers"


def _describe(token: Token) -> str:
    if token.kind == "name":
        return f"'{token.value}'"
    if token.kind == "op":
        return f"'{token.value}'"
    if token.kind == "string":
        return f"string {token.value!r}"
    return f"number {token.value!r}"
