"""Reading an extract: a CSV stream, one row at a time, each row with its line numbers and its bytes
as they are in the file (so a bad row can be kept as received).

The file is read in binary, line by line, and hashed on the way (the kept bad rows are named by
the file's sha256). A record (a row) is one physical line, or a few when a quoted cell holds line
breaks: at most MAX_RECORD_LINES lines and MAX_RECORD_BYTES bytes. A record across lines is most
likely a stray quote (`"Test` whose quote no cell closes, or one a later `5'10"` closes) swallowing
the rows after it, and is taken only when it is plausible: within those limits, split into the
header's number of cells, its line breaks only in unmapped columns or those whose field may hold
one (fields.MULTILINE), and none of its lines after the first a whole row by itself (the header's
number of cells and a well-formed ViSOR reference: a row it swallowed). Otherwise it is reported as
bad with the lines it covered, and reading starts again at the line after its first line, so the
rows it swallowed are read as rows. A single line longer than MAX_RECORD_BYTES is skipped to its
end (its row is bad). A record's cells are then at most MAX_RECORD_BYTES characters, below the csv
module's field limit (131,072), so that limit never fires; a cell longer than MAX_CELL characters
makes its row bad (convert). Text that does not decode in the mapping's encoding is kept as surrogate
escapes and reported by column.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from casewatch.model.events import VISOR_REF_PATTERN
from integrations.snapshot.fields import MULTILINE, VISOR_REF
from integrations.snapshot.mapping import Mapping

MAX_RECORD_BYTES = 128 * 1024  # a row's bytes (all its lines); <= csv.field_size_limit()'s default
MAX_RECORD_LINES = 10  # physical lines one row may span (quoted cells holding line breaks)
MAX_CELL = 32 * 1024  # characters; the longest field (licence conditions) is 50 x 500
BOM = "\ufeff"
_VISOR_REF = re.compile(VISOR_REF_PATTERN)


class ExtractError(Exception):
    """The extract cannot be used at all (no header, a mapped column missing or twice, unreadable)."""


@dataclass(frozen=True)
class Row:
    line: int  # the row's first line in the file (the header is line 1)
    cells: dict[str, str]  # mapped column header -> cell (spaces around it removed); {} if problem
    raw: bytes  # the row's bytes as in the file (of a resynced record: its first line only)
    problem: str | None = None  # why the row could not be split into cells
    last_line: int = 0  # the row's last line, when it spans several

    @property
    def where(self) -> str:
        return f"lines {self.line}-{self.last_line}" if self.last_line > self.line else f"line {self.line}"


class _Overrun(Exception):
    """A record went past MAX_RECORD_LINES lines or MAX_RECORD_BYTES bytes."""


@dataclass(slots=True)
class _Line:
    raw: bytes  # as in the file; of an oversized line, its start only
    size: int  # its length in the file
    oversized: bool = False


class _Lines:
    """The file's physical lines as text for csv.reader, remembering the lines the current record
    took, and able to hand lines out again after a resync."""

    def __init__(self, stream: IO[bytes], encoding: str) -> None:
        self.stream = stream
        self.encoding = encoding
        self.sha256 = hashlib.sha256()
        self.bytes_read = 0
        self.line = 0  # the number of the last line handed out
        self.pending: list[_Line] = []  # the current record's lines
        self.pending_bytes = 0
        self.again: deque[_Line] = deque()  # lines to hand out again (after a resync)

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self.again.popleft() if self.again else self._read()
        if line is None:
            raise StopIteration
        self.line += 1
        self.pending.append(line)
        self.pending_bytes += line.size
        if len(self.pending) > 1:
            if len(self.pending) > MAX_RECORD_LINES:
                raise _Overrun(f"a quoted cell is still open after {MAX_RECORD_LINES} lines")
            if self.pending_bytes > MAX_RECORD_BYTES:
                raise _Overrun(f"a row across lines (a quoted cell) is longer than {MAX_RECORD_BYTES} bytes")
        if line.oversized:
            return "\n"  # its row is bad (the caller sees `oversized`); nothing of it is parsed
        return line.raw.decode(self.encoding, errors="surrogateescape")

    def _read(self) -> _Line | None:
        raw = self.stream.readline(MAX_RECORD_BYTES + 1)
        if not raw:
            return None
        self._count(raw)
        if len(raw) <= MAX_RECORD_BYTES or raw.endswith(b"\n"):
            return _Line(raw, len(raw))
        size = len(raw)
        rest = raw
        while rest and not rest.endswith(b"\n"):
            rest = self.stream.readline(MAX_RECORD_BYTES)
            self._count(rest)
            size += len(rest)
        return _Line(raw[:MAX_RECORD_BYTES], size, oversized=True)  # kept: the start of the line only

    def _count(self, raw: bytes) -> None:
        self.sha256.update(raw)
        self.bytes_read += len(raw)

    def take(self) -> list[_Line]:
        lines = self.pending
        self.pending, self.pending_bytes = [], 0
        return lines

    def resync(self, lines: list[_Line], first: int) -> None:
        """Read again from the line after `first`, the first line of the record `lines`."""
        self.again.extendleft(reversed(lines[1:]))
        self.line = first


class Extract:
    """An open extract: the header is read and checked against the mapping on creation."""

    def __init__(self, stream: IO[bytes], mapping: Mapping) -> None:
        self.mapping = mapping
        self._lines = _Lines(stream, mapping.encoding)
        self._reader = csv.reader(self._lines, delimiter=mapping.delimiter, strict=True)
        self.header_raw = b""
        self.positions: dict[str, int] = {}  # mapped column header -> its index
        self.width = 0
        self._ref_index = 0
        self._single_line: dict[int, str] = {}  # index -> header of a mapped column without line breaks
        self._read_header()

    @property
    def bytes_read(self) -> int:
        return self._lines.bytes_read

    def sha256(self) -> str:
        """The hex sha256 of every byte read so far (the whole file once rows() is exhausted)."""
        return self._lines.sha256.hexdigest()

    def _read_header(self) -> None:
        try:
            header = next(self._reader, None)
        except csv.Error as exc:
            raise ExtractError(f"line 1 (the header): not CSV ({_csv_problem(exc)})") from None
        except _Overrun as exc:
            raise ExtractError(f"line 1 (the header): {exc} (a stray quote?)") from None
        lines = self._lines.take()
        self.header_raw = b"".join(line.raw for line in lines)
        if header is None or not any(cell.strip() for cell in header):
            raise ExtractError("the file is empty or its first line (the header) is blank")
        if any(line.oversized for line in lines):
            raise ExtractError(f"line 1 (the header): longer than {MAX_RECORD_BYTES} bytes")
        header[0] = header[0].removeprefix(BOM)
        names = [cell.strip() for cell in header]
        problems: list[str] = []
        for name, column in self.mapping.columns.items():
            found = [i for i, cell in enumerate(names) if cell == column]
            if not found:
                problems.append(f'columns.{name}: the header has no column "{column}"')
            elif len(found) > 1:
                problems.append(f'columns.{name}: the header has the column "{column}" {len(found)} times')
            else:
                self.positions[column] = found[0]
        if problems:
            if len(names) == 1:
                problems.append(
                    f"the header has a single column: is the delimiter right? (the mapping says "
                    f"{self.mapping.delimiter!r})"
                )
            raise ExtractError("; ".join(problems))
        self.width = len(names)
        self._ref_index = self.positions[self.mapping.columns[VISOR_REF]]
        self._single_line = {
            self.positions[column]: column
            for name, column in self.mapping.columns.items() if name not in MULTILINE
        }

    def rows(self) -> Iterator[Row]:
        while True:
            first = self._lines.line + 1
            problem: str | None = None
            cells: list[str] = []
            try:
                cells = next(self._reader)
            except StopIteration:
                return
            except _Overrun as exc:
                problem = str(exc)
            except csv.Error as exc:
                problem = f"not CSV: {_csv_problem(exc)}"
            lines = self._lines.take()
            last = first + len(lines) - 1
            if len(lines) > 1 and (problem := problem or self._implausible(cells, lines, first)):
                # Most likely a stray quote: this record swallowed the lines after its first.
                self._lines.resync(lines, first)
                yield Row(first, {}, lines[0].raw, problem=(
                    f"{problem} (a stray quote?); the lines after line {first} are read again as rows"
                ), last_line=last)
                continue
            raw = b"".join(line.raw for line in lines)
            if problem is not None:
                yield Row(first, {}, raw, problem=problem, last_line=last)
                continue
            if lines and lines[0].oversized:
                yield Row(first, {}, raw, problem=f"a line is longer than {MAX_RECORD_BYTES} bytes")
                continue
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue  # a blank line
            if len(cells) != self.width:
                yield Row(first, {}, raw, problem=f"has {len(cells)} cells, the header has {self.width}")
                continue
            yield Row(
                first, {column: cells[i].strip(" ") for column, i in self.positions.items()}, raw,
                last_line=last,
            )

    def _implausible(self, cells: list[str], lines: list[_Line], first: int) -> str | None:
        """Why a record across lines is not taken as one row (a stray quote?), or None."""
        if len(cells) != self.width:
            return f"has {len(cells)} cells, the header has {self.width}"
        for offset, line in enumerate(lines[1:], start=1):
            if self._whole_row(line):
                return f"line {first + offset} is a whole row by itself"
        for index, column in self._single_line.items():
            if "\n" in cells[index] or "\r" in cells[index]:
                return f'a line break in column "{column}", which cannot hold one'
        return None

    def _whole_row(self, line: _Line) -> bool:
        """The line alone splits into the header's number of cells with a ViSOR reference in its
        place: a row a stray quote swallowed, not the rest of a quoted cell."""
        if line.oversized:
            return False
        text = line.raw.decode(self.mapping.encoding, errors="surrogateescape")
        try:
            cells = next(csv.reader([text], delimiter=self.mapping.delimiter, strict=True), [])
        except csv.Error:
            return False
        if len(cells) != self.width:
            return False
        return _VISOR_REF.fullmatch(cells[self._ref_index].strip(" ")) is not None


def _csv_problem(exc: csv.Error) -> str:
    # csv's messages name the problem, never the cell's content.
    text = str(exc)
    if text == "unexpected end of data":
        return "a quoted cell is not closed by the end of the file"
    return text if len(text) < 120 else text[:117] + "..."
