"""Label selectors with the grammar and the error messages of ``k8s.io/apimachinery/pkg/labels.Parse``.

    selector    := requirement ( "," requirement )*
    requirement := ["!"] KEY | KEY op VALUE | KEY ("in" | "notin") "(" [VALUE ("," VALUE)*] ")"
    op          := "=" | "==" | "!=" | ">" | "<"

Keys are qualified names (``[prefix/]name``), values label values (63 characters at most, may be
empty). A query string's ``+`` is a space, as Go's ``url.ParseQuery`` reads it; callers decode the
query before handing the text here.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum


class SelectorError(ValueError):
    """A selector that does not parse; the message names the token and what was expected."""


class Op(StrEnum):
    EXISTS = "exists"
    NOT_EXISTS = "!"
    EQUALS = "="
    DOUBLE_EQUALS = "=="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    GT = "gt"
    LT = "lt"


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: Op
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.op is Op.EXISTS:
            return present
        if self.op is Op.NOT_EXISTS:
            return not present
        if self.op in (Op.EQUALS, Op.DOUBLE_EQUALS, Op.IN):
            return present and labels[self.key] in self.values
        if self.op in (Op.NOT_EQUALS, Op.NOT_IN):
            return not present or labels[self.key] not in self.values
        if not present:
            return False
        try:
            have, want = int(labels[self.key]), int(self.values[0])
        except ValueError:
            return False
        return have > want if self.op is Op.GT else have < want


@dataclass(frozen=True, slots=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def named_values(self, key: str) -> set[str]:
        """Values ``key`` is required to be one of (by ``=``, ``==`` or ``in``): names a caller asked for."""
        named: set[str] = set()
        for r in self.requirements:
            if r.key == key and r.op in (Op.EQUALS, Op.DOUBLE_EQUALS, Op.IN):
                named.update(r.values)
        return named

    def __str__(self) -> str:
        return ",".join(_render(r) for r in self.requirements)


#: the empty selector, which every set of labels matches
EVERYTHING = Selector()


def _render(r: Requirement) -> str:
    if r.op is Op.EXISTS:
        return r.key
    if r.op is Op.NOT_EXISTS:
        return "!" + r.key
    if r.op in (Op.IN, Op.NOT_IN):
        return f"{r.key} {r.op.value} ({','.join(sorted(r.values))})"
    symbol = {Op.GT: ">", Op.LT: "<"}.get(r.op, r.op.value)
    return f"{r.key}{symbol}{r.values[0]}"


# -- lexer -------------------------------------------------------------------------------------
class _T(Enum):
    ERROR = "error"
    EOS = "end of string"
    CLOSE = ")"
    COMMA = ","
    NOT_EXISTS = "!"
    DOUBLE_EQUALS = "=="
    EQUALS = "="
    GT = ">"
    IN = "in"
    LT = "<"
    NOT_EQUALS = "!="
    NOT_IN = "notin"
    OPEN = "("
    IDENT = "identifier"


_SPECIAL = "=!(),><"
_OPERATOR_STRINGS = {"!": _T.NOT_EXISTS, "!=": _T.NOT_EQUALS, "(": _T.OPEN, ")": _T.CLOSE, ",": _T.COMMA}
_OPERATOR_STRINGS.update({"==": _T.DOUBLE_EQUALS, "=": _T.EQUALS, ">": _T.GT, "<": _T.LT})
_KEYWORDS = {"in": _T.IN, "notin": _T.NOT_IN}
_WHITESPACE = " \t\r\n"


def _lex(text: str) -> list[tuple[_T, str]]:
    tokens: list[tuple[_T, str]] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in _WHITESPACE:
            i += 1
        if i >= n:
            tokens.append((_T.EOS, ""))
            return tokens
        ch = text[i]
        if ch in _SPECIAL:
            j = i
            while j < n and text[j] in _SPECIAL and text[i : j + 1] in _OPERATOR_STRINGS:
                j += 1
            literal = text[i:j] if j > i else ch
            if literal not in _OPERATOR_STRINGS:
                tokens.append((_T.ERROR, literal))
                return tokens
            tokens.append((_OPERATOR_STRINGS[literal], literal))
            i = j
            continue
        j = i
        while j < n and text[j] not in _SPECIAL and text[j] not in _WHITESPACE:
            j += 1
        word = text[i:j]
        tokens.append((_KEYWORDS.get(word, _T.IDENT), word))
        i = j


# -- validation (k8s.io/apimachinery/pkg/util/validation) --------------------------------------
_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NAME_HINT = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)


def _key_errors(key: str) -> list[str]:
    prefix, sep, name = key.rpartition("/")
    errors: list[str] = []
    if sep and not prefix:
        errors.append("prefix part must be non-empty")
    elif sep:
        if len(prefix) > 253:
            errors.append("prefix part must be no more than 253 bytes")
        if not _DNS1123_SUBDOMAIN.match(prefix):
            errors.append(
                "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                "'-' or '.', and must start and end with an alphanumeric character"
            )
    if "/" in prefix:
        return [
            "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
            "with an alphanumeric character with an optional DNS subdomain prefix and '/'"
        ]
    if not name:
        errors.append("name part must be non-empty")
    elif len(name) > 63:
        errors.append("name part must be no more than 63 bytes")
    elif not _NAME.match(name):
        errors.append("name part " + _NAME_HINT)
    return errors


def _value_errors(value: str) -> list[str]:
    if value == "":
        return []
    if len(value) > 63:
        return ["must be no more than 63 bytes"]
    if not _NAME.match(value):
        return ["a valid label " + _NAME_HINT]
    return []


# -- parser ------------------------------------------------------------------------------------
class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _lex(text)
        self.pos = 0

    def peek(self) -> tuple[_T, str]:
        return self.tokens[min(self.pos, len(self.tokens) - 1)]

    def consume(self) -> tuple[_T, str]:
        token = self.peek()
        self.pos += 1
        return token

    def parse(self) -> Selector:
        requirements: list[Requirement] = []
        while True:
            kind, literal = self.peek()
            if kind in (_T.IDENT, _T.NOT_EXISTS):
                requirements.append(self.requirement())
                kind, literal = self.consume()
                if kind is _T.EOS:
                    return Selector(tuple(requirements))
                if kind is _T.COMMA:
                    nxt, nxt_literal = self.peek()
                    if nxt not in (_T.IDENT, _T.NOT_EXISTS):
                        raise SelectorError(f"found '{nxt_literal}', expected: identifier after ','")
                    continue
                raise SelectorError(f"found '{literal}', expected: ',' or 'end of string'")
            if kind is _T.EOS:
                return Selector(tuple(requirements))
            raise SelectorError(f"found '{literal}', expected: !, identifier, or 'end of string'")

    def requirement(self) -> Requirement:
        key, op = self.key_and_inferred_operator()
        if op is not None:
            return self.new(key, op, ())
        op = self.operator()
        values = self.values_in_parens() if op in (Op.IN, Op.NOT_IN) else (self.exact_value(),)
        return self.new(key, op, values)

    def key_and_inferred_operator(self) -> tuple[str, Op | None]:
        op: Op | None = None
        kind, literal = self.consume()
        if kind is _T.NOT_EXISTS:
            op = Op.NOT_EXISTS
            kind, literal = self.consume()
        if kind is not _T.IDENT:
            raise SelectorError(f"found '{literal}', expected: identifier")
        errors = _key_errors(literal)
        if errors:
            raise SelectorError(f"invalid label key {literal!r}: {'; '.join(errors)}")
        nxt, nxt_literal = self.peek()
        if nxt in (_T.EOS, _T.COMMA):
            return literal, op or Op.EXISTS
        if op is Op.NOT_EXISTS:
            raise SelectorError(f"'!' can only be followed by a key, found '{nxt_literal}' after {literal!r}")
        return literal, None

    def operator(self) -> Op:
        kind, literal = self.consume()
        table = {
            _T.DOUBLE_EQUALS: Op.DOUBLE_EQUALS,
            _T.EQUALS: Op.EQUALS,
            _T.GT: Op.GT,
            _T.LT: Op.LT,
            _T.IN: Op.IN,
            _T.NOT_EQUALS: Op.NOT_EQUALS,
            _T.NOT_IN: Op.NOT_IN,
        }
        if kind not in table:
            raise SelectorError(f"found '{literal}', expected: {', '.join(['=', '!=', '==', 'in', 'notin', '>', '<'])}")
        return table[kind]

    def values_in_parens(self) -> tuple[str, ...]:
        kind, literal = self.consume()
        if kind is not _T.OPEN:
            raise SelectorError(f"found '{literal}' expected: '('")
        values: list[str] = []
        kind, literal = self.peek()
        if kind is _T.CLOSE:
            self.consume()
            return ()
        while True:
            kind, literal = self.peek()
            if kind in (_T.IDENT, _T.IN, _T.NOT_IN):
                self.consume()
                values.append(literal)
                kind, literal = self.consume()
                if kind is _T.CLOSE:
                    return tuple(values)
                if kind is not _T.COMMA:
                    raise SelectorError(f"found '{literal}', expected: ',' or ')'")
                if self.peek()[0] is _T.CLOSE:  # "(a,)": an empty last value
                    self.consume()
                    values.append("")
                    return tuple(values)
            elif kind is _T.COMMA:  # "(,a)": an empty value
                self.consume()
                values.append("")
            else:
                raise SelectorError(f"found '{literal}', expected: ',', ')' or identifier")

    def exact_value(self) -> str:
        kind, literal = self.peek()
        if kind in (_T.EOS, _T.COMMA):
            return ""
        self.consume()
        if kind in (_T.IDENT, _T.IN, _T.NOT_IN):
            return literal
        raise SelectorError(f"found '{literal}', expected: identifier")

    @staticmethod
    def new(key: str, op: Op, values: Iterable[str]) -> Requirement:
        vals = tuple(sorted(set(values)))
        if op in (Op.IN, Op.NOT_IN) and not vals:
            raise SelectorError(f"for 'in', 'notin' operators, values set can't be empty (key {key!r})")
        if op in (Op.EQUALS, Op.DOUBLE_EQUALS, Op.NOT_EQUALS) and len(vals) != 1:
            raise SelectorError(f"exact-match compatibility requires one single value (key {key!r})")
        if op in (Op.GT, Op.LT):
            if len(vals) != 1:
                raise SelectorError(f"for 'Gt', 'Lt' operators, exactly one value is required (key {key!r})")
            if not re.fullmatch(r"[+-]?\d+", vals[0]):
                raise SelectorError(
                    f"for 'Gt', 'Lt' operators, the value must be an integer (key {key!r}, got {vals[0]!r})"
                )
        for value in vals:
            if op not in (Op.GT, Op.LT):
                errors = _value_errors(value)
                if errors:
                    raise SelectorError(f"invalid label value {value!r} for key {key!r}: {'; '.join(errors)}")
        return Requirement(key, op, vals)


@functools.lru_cache(maxsize=1024)
def parse_selector(text: str) -> Selector:
    """Parse a label selector (already URL-decoded). Raises SelectorError with a one-line message.
    Parsed selectors are kept (the HPAs of a cluster ask the same few again and again)."""
    return _Parser(text).parse()
