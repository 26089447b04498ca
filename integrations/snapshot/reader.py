"""Reading an extract: a CSV stream, one row at a time, each row with its line number and its bytes
as they are in the file (so a bad row can be kept as received).

The file is read in binary, line by line, and hashed on the way (the kept bad rows are named by
the file's sha256). A physical line longer than MAX_LINE_BYTES is skipped to its end (its row is
bad); a cell longer than MAX_CELL characters makes its row bad. Text that does not decode in the
mapping's encoding is kept as surrogate escapes and reported by column.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from integrations.snapshot.mapping import Mapping

MAX_LINE_BYTES = 256 * 1024
MAX_CELL = 32 * 1024  # characters; the longest field (licence conditions) is 50 x 500
BOM = "\ufeff"


class ExtractError(Exception):
    """The extract cannot be used at all (no header, a mapped column missing or twice, unreadable)."""


@dataclass(frozen=True)
class Row:
    line: int  # the row's first line in the file (the header is line 1)
    cells: dict[str, str]  # mapped column header -> cell (spaces around it removed); {} if problem
    raw: bytes  # the row's bytes as in the file
    problem: str | None = None  # why the row could not be split into cells


class _Lines:
    """The file's physical lines as text for csv.reader, remembering the bytes each row took."""

    def __init__(self, stream: IO[bytes], encoding: str) -> None:
        self.stream = stream
        self.encoding = encoding
        self.sha256 = hashlib.sha256()
        self.bytes_read = 0
        self.lines_read = 0
        self.pending: list[bytes] = []
        self.oversized = False

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        raw = self.stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            raise StopIteration
        self._count(raw)
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            self.oversized = True
            self.pending.append(raw[:MAX_LINE_BYTES])  # kept: the start of the line only
            while raw and not raw.endswith(b"\n"):
                raw = self.stream.readline(MAX_LINE_BYTES)
                self._count(raw, line=False)
            return "\n"
        self.pending.append(raw)
        return raw.decode(self.encoding, errors="surrogateescape")

    def _count(self, raw: bytes, *, line: bool = True) -> None:
        self.sha256.update(raw)
        self.bytes_read += len(raw)
        self.lines_read += line

    def take(self) -> tuple[bytes, bool]:
        raw, oversized = b"".join(self.pending), self.oversized
        self.pending, self.oversized = [], False
        return raw, oversized


class Extract:
    """An open extract: the header is read and checked against the mapping on creation."""

    def __init__(self, stream: IO[bytes], mapping: Mapping) -> None:
        self.mapping = mapping
        self._lines = _Lines(stream, mapping.encoding)
        self._reader = csv.reader(self._lines, delimiter=mapping.delimiter, strict=True)
        self.header_raw = b""
        self.positions: dict[str, int] = {}  # mapped column header -> its index
        self.width = 0
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
            raise ExtractError(f"line 1 (the header): not CSV ({exc})") from None
        self.header_raw, oversized = self._lines.take()
        if header is None or not any(cell.strip() for cell in header):
            raise ExtractError("the file is empty or its first line (the header) is blank")
        if oversized:
            raise ExtractError(f"line 1 (the header): longer than {MAX_LINE_BYTES} bytes")
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

    def rows(self) -> Iterator[Row]:
        while True:
            first = self._lines.lines_read + 1
            try:
                cells = next(self._reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raw, _ = self._lines.take()
                yield Row(first, {}, raw, problem=f"not CSV: {_csv_problem(exc)}")
                continue
            raw, oversized = self._lines.take()
            if oversized:
                yield Row(first, {}, raw, problem=f"a line is longer than {MAX_LINE_BYTES} bytes")
                continue
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue  # a blank line
            if len(cells) != self.width:
                yield Row(first, {}, raw, problem=f"has {len(cells)} cells, the header has {self.width}")
                continue
            yield Row(first, {column: cells[i].strip(" ") for column, i in self.positions.items()}, raw)


def _csv_problem(exc: csv.Error) -> str:
    # csv's messages name the problem, never the cell's content.
    text = str(exc)
    return text if len(text) < 120 else text[:117] + "..."
