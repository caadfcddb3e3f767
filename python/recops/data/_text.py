# SPDX-License-Identifier: Apache-2.0
"""The line loop every reader runs, and the integer parser they share.

Files are UTF-8: a leading byte-order mark is dropped (as "utf-8-sig" does), a line that does not decode is a
ValueError naming the file, the line and the byte. Lines are numbered from 1 as in an editor; blank lines (ASCII
whitespace only) are skipped, and so are comment lines when the format has them."""

import math
import os
from typing import Iterator, Optional, Tuple

_BOM = b"\xef\xbb\xbf"


class DataError(ValueError):
    """A data file that cannot be read as its format says: missing, not UTF-8, or a malformed line (the message
    starts with "<file>:<line>: "). A ValueError, so callers that catch ValueError keep working; the command line
    reports it as a user error wherever it surfaces (a streamed file only meets a bad line when it reaches it)."""
INT64_MIN, INT64_MAX = -2 ** 63, 2 ** 63 - 1


def require_file(path: str) -> None:
    """DataError "<path>: no such file" (or "... is a folder") unless `path` is a file."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: {'is a folder, not a file' if os.path.isdir(path) else 'no such file'}")


def _content(raw: bytes, lineno: int) -> bytes:
    """The line's bytes without the byte-order mark a first line may start with."""
    return raw[len(_BOM):] if lineno == 1 and raw.startswith(_BOM) else raw


def lines(path: str, comment: Optional[str] = None) -> Iterator[Tuple[int, str]]:
    """Yield (line number, text without its line ending) of each non-blank line of `path` (and, with `comment`,
    each line whose first non-blank characters are not `comment`)."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            raw = _content(raw, lineno)
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno}: text must be UTF-8, got byte 0x{raw[e.start]:02x} at "
                                 f"column {e.start + 1}") from None
            line = line.rstrip("\r\n")
            if comment is not None and line.lstrip().startswith(comment):
                continue
            yield lineno, line


def count_lines(path: str) -> int:
    """The number of lines `lines(path)` yields (without decoding them)."""
    n = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            n += bool(_content(raw, lineno).strip())
    return n


def parse_int(text: str, path: str, lineno: int, what: str, float_ok: bool = False) -> int:
    """`text` as an int64: an integer, or with `float_ok` also a finite decimal number (truncated: "30.0",
    "1.2e9"). DataError "<path>:<lineno>: <what> must be ..., got <text>" otherwise, or when it does not fit in
    int64."""
    try:
        value = int(text)
    except ValueError:
        if not float_ok:
            raise DataError(f"{path}:{lineno}: {what} must be an integer, got {text!r}") from None
        try:
            number = float(text)
        except ValueError:
            raise DataError(f"{path}:{lineno}: {what} must be a number, got {text!r}") from None
        if not math.isfinite(number):
            raise DataError(f"{path}:{lineno}: {what} must be finite, got {text!r}") from None
        value = int(number)
    if not INT64_MIN <= value <= INT64_MAX:
        raise DataError(f"{path}:{lineno}: {what} must fit in int64 [-2^63, 2^63), got {text!r}")
    return value
