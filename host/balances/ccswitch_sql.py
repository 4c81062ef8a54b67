"""The providers of a cc-switch SQL export (what "Export" writes since v3.8: ``Database::dump_sql``
in src-tauri/src/database/backup.rs), read without running any of it.

The file is SQL text: a ``-- CC Switch SQLite 导出`` header, ``PRAGMA foreign_keys``/``user_version``,
``BEGIN TRANSACTION``, every table's ``CREATE``, then ``INSERT INTO "table" ("col", ...) VALUES
(...),(...)`` batches of literals (NULL, numbers, ``'text'``, ``X'hex'``, ``CAST(X'hex' AS TEXT)``),
``DELETE FROM sqlite_sequence``, the triggers and ``COMMIT``. Executing it would hand whoever wrote
the file SQLite itself: ``ATTACH`` creates files, ``PRAGMA``s change the engine, a function call
in a row (``randomblob``, ``load_extension``, a recursive CTE) costs what it likes. So nothing is
executed: the text is split into statements (quotes and comments respected), every statement must
be one of those an export holds, and only the ``providers`` rows are parsed, as literals. Anything
else (``ATTACH``, another ``PRAGMA``, ``UPDATE``, a value that is an expression) is refused with a
CcSwitchUnreadable naming the file and the line. The file is read whole, up to MAX_DUMP_BYTES."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import HostError

MAX_DUMP_BYTES = 256 * 1024 * 1024  # a cc-switch export with its request logs; past it, use cc-switch.db
TABLE = "providers"
# What the export writes beside the data (backup.rs IMPORT_ALLOWED_PRAGMAS, dump_sql)
PRAGMAS = ("foreign_keys", "user_version")
_SKIPPED = {"BEGIN", "COMMIT", "END"}
_FIRST = [["PRAGMA"], ["BEGIN"], ["CREATE"], ["INSERT"]]  # how an export starts (after its comments)
_CREATED = {"TABLE", "INDEX", "UNIQUE", "VIEW", "TRIGGER", "TEMP", "TEMPORARY"}
_SPECIAL = re.compile(r"'|\"|`|\[|--|/\*|;")
_CLOSE = {"'": "'", '"': '"', "`": "`", "[": "]"}
_DEFINITION = re.compile(r"'|\"|`|\[|--|/\*|\(|\)|,")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_NAME = re.compile(r'"(?:[^"]|"")*"|`(?:[^`]|``)*`|\[[^\]]*\]|[A-Za-z_][A-Za-z0-9_$]*')
_SPACE = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?(?:\*/|$))*", re.S)
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_TEXT = re.compile(r"'(?:[^']|'')*'")
_BLOB = re.compile(r"[xX]'([0-9A-Fa-f]*)'")
_END = re.compile(r"\bEND\s*\Z", re.I)
_CAST = re.compile(r"CAST\s*\(\s*[xX]'([0-9A-Fa-f]*)'\s+AS\s+TEXT\s*\)", re.I)


MAX_END_ASKS = 256  # "END;" inside one trigger (CASE ... END;): each asks sqlite whether it ended


class CcSwitchUnreadable(HostError):
    """A cc-switch database or export this host cannot read (missing, damaged, another format,
    or holding something a cc-switch export never does): the message names the file (and line)."""


def _unquote(name: str) -> str:
    if name[:1] in "\"`":
        return name[1:-1].replace(name[0] * 2, name[0])
    return name[1:-1] if name[:1] == "[" else name


class _Text:
    """The dump's text, its statements and where each starts (line numbers counted as it goes)."""

    def __init__(self, path: Path, text: str) -> None:
        self.path, self.text = path, text
        self._pos, self._line = 0, 1

    def line(self, pos: int) -> int:
        if pos < self._pos:  # a step back (a refusal after the statement's start): count again
            self._pos, self._line = 0, 1
        self._line += self.text.count("\n", self._pos, pos)
        self._pos = pos
        return self._line

    def fail(self, pos: int, what: str) -> CcSwitchUnreadable:
        return CcSwitchUnreadable(f"{self.path}: line {self.line(pos)}: {what}; refused (nothing in the file was run)")

    def statements(self) -> Iterator[tuple[int, int]]:
        """(start, end) of each statement: ``start`` its first word, ``end`` its ``;`` (or the end)."""
        # ``first`` is found once per statement: found at each ";" inside a trigger, it read the
        # comments before the trigger again each time (7.5 s: 20,000 ";" after a 20 KB comment)
        text, i, start, first, asked = self.text, 0, 0, None, 0
        while True:
            m = _SPECIAL.search(text, i)
            if m is None:
                if first is None:
                    first = _SPACE.match(text, start).end()  # type: ignore[union-attr]
                if first < len(text):
                    yield first, len(text)
                return
            tok, at = m.group(), m.start()
            if tok in _CLOSE:
                i = self.closing(at, tok)
            elif tok == "--":
                nl = text.find("\n", at)
                i = len(text) if nl == -1 else nl + 1
            elif tok == "/*":
                close = text.find("*/", at + 2)
                i = len(text) if close == -1 else close + 2
            else:  # ";": a statement ends, unless it is inside a trigger's BEGIN ... END
                if first is None:
                    first = _SPACE.match(text, start).end()  # type: ignore[union-attr]
                i = at + 1
                if self._trigger(first) and _END.search(text, max(first, at - 64), at):  # a trigger ends in END
                    asked += 1  # each ask reads the statement so far: a bound keeps the whole linear
                    if asked > MAX_END_ASKS:
                        raise self.fail(first, f"a trigger with more than {MAX_END_ASKS} 'END;' in it")
                    if not sqlite3.complete_statement(text[first:i].replace("\0", " ")):
                        continue
                elif self._trigger(first):
                    continue  # (a ";" inside it, not after an END, costs no re-read of the statement so far)
                if first < at:
                    yield first, at
                start, first, asked = i, None, 0

    def closing(self, at: int, quote: str) -> int:
        text, close, j = self.text, _CLOSE[quote], at + 1
        while True:
            k = text.find(close, j)
            if k == -1:
                raise self.fail(at, "a quoted text or name that never ends (is the file cut short?)")
            if quote != "[" and text.startswith(close, k + 1):  # '' inside '...'
                j = k + 2
                continue
            return k + 1

    def _trigger(self, first: int) -> bool:
        words = [w.upper() for w in _WORD.findall(self.text, first, min(first + 64, len(self.text)))[:3]]
        return words[:1] == ["CREATE"] and "TRIGGER" in words


def _words(t: _Text, start: int, end: int, n: int) -> list[str]:
    out, pos = [], start
    while len(out) < n:
        pos = _SPACE.match(t.text, pos, end).end()  # type: ignore[union-attr]
        m = _WORD.match(t.text, pos, end)
        if m is None:
            break
        out.append(m.group().upper())
        pos = m.end()
    return out


class _Cursor:
    """Reads one statement's tokens (names, literals, punctuation) from ``pos`` to ``end``."""

    def __init__(self, t: _Text, pos: int, end: int) -> None:
        self.t, self.pos, self.end = t, pos, end

    def skip(self) -> None:
        self.pos = _SPACE.match(self.t.text, self.pos, self.end).end()  # type: ignore[union-attr]

    def take(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        self.skip()
        m = pattern.match(self.t.text, self.pos, self.end)
        if m is not None:
            self.pos = m.end()
        return m

    def punct(self, char: str) -> bool:
        self.skip()
        if self.t.text.startswith(char, self.pos) and self.pos < self.end:
            self.pos += 1
            return True
        return False

    def word(self, *words: str) -> bool:
        self.skip()
        m = _WORD.match(self.t.text, self.pos, self.end)
        if m is not None and m.group().upper() in words:
            self.pos = m.end()
            return True
        return False

    def done(self) -> bool:
        self.skip()
        return self.pos >= self.end

    def value(self) -> Any:
        """One literal, as the export writes it; anything else is refused."""
        if self.word("NULL"):
            return None
        if m := self.take(_TEXT):
            return m.group()[1:-1].replace("''", "'")
        if m := self.take(_CAST):
            return bytes.fromhex(m.group(1)).decode("utf-8", errors="replace")
        if m := self.take(_BLOB):
            return bytes.fromhex(m.group(1))
        if m := self.take(_NUMBER):
            text = m.group()
            return float(text) if any(c in text for c in ".eE") else int(text)
        raise self.t.fail(self.pos, f"a {TABLE} row holds something other than a plain value "
                                    f"({self.t.text[self.pos:self.pos + 30]!r}...): an export writes only literals")


def _columns_of_create(t: _Text, start: int, end: int) -> list[str]:
    """The column names of ``CREATE TABLE providers (...)``, in order (constraints left out)."""
    text, pos = t.text, t.text.find("(", start, end)
    if pos == -1:
        return []
    pieces, depth, part = [], 0, pos + 1
    for m in _DEFINITION.finditer(text, pos + 1, end):
        if m.start() < pos:  # inside a quoted name or text skipped below
            continue
        tok = m.group()
        if tok in _CLOSE:
            pos = t.closing(m.start(), tok)
        elif tok in ("--", "/*"):
            close = text.find("\n" if tok == "--" else "*/", m.start() + 2)
            pos = end if close == -1 else close + 1
        elif tok == "(":
            depth += 1
        elif tok == ")" and depth:
            depth -= 1
        elif depth == 0:  # "," between definitions, or the closing ")"
            pieces.append((part, m.start()))
            part = m.end()
            if tok == ")":
                break
    cols = []
    for a, b in pieces:
        m = _NAME.match(text, _SPACE.match(text, a, b).end(), b)  # type: ignore[union-attr]
        if m is not None and m.group().upper() not in ("PRIMARY", "UNIQUE", "CHECK", "FOREIGN", "CONSTRAINT"):
            cols.append(_unquote(m.group()))
    return cols


def _insert(t: _Text, start: int, end: int, known: list[str] | None) -> list[dict[str, Any]] | None:
    """The rows of an ``INSERT INTO providers``; None for another table's (not read)."""
    c = _Cursor(t, start, end)
    c.word("INSERT", "REPLACE")
    if c.word("OR"):
        c.word("REPLACE", "IGNORE", "ABORT", "FAIL", "ROLLBACK")
    if not c.word("INTO"):
        raise t.fail(start, "an INSERT without INTO")
    name = c.take(_NAME)
    if name is None:
        raise t.fail(c.pos, "an INSERT without a table name")
    if _unquote(name.group()).lower() != TABLE:
        return None
    columns: list[str] = []
    if c.punct("("):
        while True:
            col = c.take(_NAME)
            if col is None:
                raise t.fail(c.pos, f"a column list of {TABLE} that is not names")
            columns.append(_unquote(col.group()).lower())
            if c.punct(")"):
                break
            if not c.punct(","):
                raise t.fail(c.pos, f"a column list of {TABLE} that is not names")
    elif known is None:
        raise t.fail(start, f"an INSERT INTO {TABLE} without its columns and no CREATE TABLE {TABLE} before it")
    else:
        columns = [k.lower() for k in known]
    if not c.word("VALUES"):
        raise t.fail(c.pos, f"an INSERT INTO {TABLE} that is not VALUES (...)")
    rows = []
    while True:
        if not c.punct("("):
            raise t.fail(c.pos, f"a {TABLE} row that is not (value, ...)")
        values = [c.value()]
        while c.punct(","):
            values.append(c.value())
        if not c.punct(")"):
            raise t.fail(c.pos, f"a {TABLE} row that is not (value, ...)")
        if len(values) != len(columns):
            raise t.fail(c.pos, f"a {TABLE} row of {len(values)} values for {len(columns)} columns")
        rows.append(dict(zip(columns, values, strict=True)))
        if c.done():
            return rows
        if not c.punct(","):
            raise t.fail(c.pos, f"something after the {TABLE} rows")


def _refusal(t: _Text, start: int, end: int) -> str | None:
    """Why the statement is not one an export holds (None: it is, and it is not a providers INSERT)."""
    words = _words(t, start, end, 4)
    head = words[0] if words else t.text[start:start + 20]
    if head in _SKIPPED:
        return None
    if head == "PRAGMA":
        name = words[1].lower() if len(words) > 1 else ""
        return None if name in PRAGMAS else f"PRAGMA {name or '?'} (an export sets only {' and '.join(PRAGMAS)})"
    if head == "CREATE":
        return None if len(words) > 1 and words[1] in _CREATED and "VIRTUAL" not in words else f"CREATE {' '.join(words[1:3])}"
    if head == "DELETE" and words[1:2] == ["FROM"]:
        c = _Cursor(t, start, end)
        c.word("DELETE"), c.word("FROM")
        name = c.take(_NAME)
        return None if name is not None and _unquote(name.group()) == "sqlite_sequence" and c.done() else "DELETE"
    return f"{head} (not something a cc-switch export holds)"


def dump_rows(path: Path, text: str) -> list[dict[str, Any]]:
    """The ``providers`` rows of the SQL export read from ``path`` as ``text``, column name -> value."""
    t = _Text(path, text)
    rows: list[dict[str, Any]] = []
    known: list[str] | None = None
    seen_table = seen_sql = False
    for start, end in t.statements():
        words = _words(t, start, end, 4)
        if not seen_sql and words[:1] not in _FIRST:
            raise CcSwitchUnreadable(f"{path}: not a cc-switch database, nor its SQL export or config.json")
        seen_sql = True
        if words[:1] == ["INSERT"] or words[:2] == ["REPLACE", "INTO"]:
            got = _insert(t, start, end, known)
            if got is not None:
                rows.extend(got)
            continue
        if (why := _refusal(t, start, end)) is not None:
            raise t.fail(start, why)
        if words[:2] == ["CREATE", "TABLE"]:
            c = _Cursor(t, start, end)
            c.word("CREATE"), c.word("TABLE")
            if c.word("IF"):
                c.word("NOT"), c.word("EXISTS")
            name = c.take(_NAME)
            if name is not None and _unquote(name.group()).lower() == TABLE:
                known, seen_table = _columns_of_create(t, start, end), True
    if not seen_table and not rows:
        raise CcSwitchUnreadable(f"{path}: SQL text with no {TABLE} table: not a cc-switch database export")
    return rows


__all__ = ["MAX_DUMP_BYTES", "CcSwitchUnreadable", "dump_rows"]
