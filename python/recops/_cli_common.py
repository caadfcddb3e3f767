# SPDX-License-Identifier: Apache-2.0
"""What every command of the `recops` command line shares: the one user-error path (UserError), the checked
argparse value types, the help formatter, reading user input, result tables and metrics.json, the --out and
data-file checks run before any work, and the process ranks."""

import argparse
import contextlib
import json
import math
import os
import tempfile
from typing import Any, Callable, Dict, Optional, Sequence


class UserError(SystemExit):
    """A mistake in the command line or its input: main prints `<prog>: error: <message>` (one line) on stderr,
    and the process exits with status 2 (this is a SystemExit whose code is 2; str() is the message)."""

    def __init__(self, message: str, prog: str = "recops"):
        super().__init__(2)
        self.message = "; ".join(part.strip() for part in str(message).splitlines() if part.strip())
        self.prog = prog

    def __str__(self) -> str:
        return self.message


class _Parser(argparse.ArgumentParser):
    """argparse without abbreviated flags (a prefix of a flag is an unknown flag, so a new flag never changes what
    an old command line means); a usage error is a UserError (one line, exit status 2)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise UserError(f"{message} (see {self.prog} --help)", self.prog)


def _checked(cast: Callable[[str], Any], rule: str, ok: Callable[[Any], bool]) -> Callable[[str], Any]:
    """An argparse type: `cast` (whose ValueError argparse reports as "invalid <cast> value"), then `ok`, else
    "must be <rule>, got <text>"."""
    def parse(text: str):
        value = cast(text)
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text or repr(text)}")
        return value

    parse.__name__ = cast.__name__
    return parse


_COUNT = _checked(int, "an integer >= 1", lambda v: v >= 1)
_NON_NEGATIVE = _checked(int, "an integer >= 0", lambda v: v >= 0)
_SEED = _checked(int, "an integer in [0, 2^64)", lambda v: 0 <= v < 2 ** 64)
_POSITIVE = _checked(float, "a finite number > 0", lambda v: math.isfinite(v) and v > 0)
_RATE = _checked(float, "a number in [0, 1)", lambda v: 0 <= v < 1)
_OPEN_RATE = _checked(float, "a number in (0, 1)", lambda v: 0 < v < 1)
_PATH = _checked(str, "a non-empty path", bool)


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Help with each flag's default, where it has one."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


@contextlib.contextmanager
def _user_input(*kinds: type):
    """Inside, an exception of `kinds` (default ValueError, TypeError, OSError) comes from what the user gave (a
    data or checkpoint file, --out): it becomes a UserError naming the file. Work that is not reading user input
    stays outside, so its errors keep their traceback."""
    try:
        yield
    except kinds or (ValueError, TypeError, OSError) as e:
        if isinstance(e, OSError) and e.filename is not None:
            raise UserError(f"{e.filename}: {e.strerror or e}") from None
        raise UserError(str(e)) from None


def _table(results: Dict[str, Dict[str, float]]) -> str:
    names = list(results)
    keys = list(next(iter(results.values())).keys()) if results else []
    width = max([len(k) for k in keys] + [6])
    lines = [" " * width + "".join(f"{n:>14}" for n in names)]
    for k in keys:
        lines.append(f"{k:<{width}}" + "".join(f"{results[n][k]:>14.4f}" for n in names))
    return "\n".join(lines)


def _write_metrics(out: Optional[str], payload: dict) -> None:
    if out:
        with _user_input(OSError):
            os.makedirs(out, exist_ok=True)
            with open(os.path.join(out, "metrics.json"), "w") as f:
                json.dump(payload, f, indent=2)
        print(f"\nwrote {os.path.join(out, 'metrics.json')}")


def _check_out(out: str, runs: Sequence[str]) -> None:
    """--out before any work (a late failure would lose the trained models): the folder and each run's folder
    must be folders or not exist yet, the files the runs write must not be folders nor read-only, and the nearest
    existing folder of each must take a new file (a probe, removed at once)."""
    from .train import checkpoint

    folders = [out] + [os.path.join(out, name) for name in runs]
    files = [os.path.join(out, "metrics.json")] + [os.path.join(out, name, f) for name in runs
                                                   for f in checkpoint.FILES]
    for path in folders:
        if os.path.exists(path) and not os.path.isdir(path):
            raise ValueError(f"--out: {path} must be a folder, got a file")
    for path in files:
        if os.path.isdir(path):
            raise ValueError(f"--out: {path} must be a file, got a folder")
        if os.path.exists(path) and not os.access(path, os.W_OK):
            raise ValueError(f"--out: {path} must be writable, got a read-only file")
    for path in dict.fromkeys(folders):
        existing = os.path.abspath(path)
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            raise ValueError(f"--out: {existing} must be a folder, got a file")
        try:
            with tempfile.NamedTemporaryFile(dir=existing, prefix=".recops-probe-"):
                pass
        except OSError as e:
            raise ValueError(f"--out: {existing} must be a writable folder, got {e.strerror or e}") from None


_FOLDER_FORMATS = ("mbcgcn",)  # data formats read from a folder of files


def _check_train(args, family: "Family", runs: Sequence[str]) -> None:
    """What argparse cannot check alone, before any work: the data file, its format and --out."""
    from .data._text import require_file

    if args.data != "synthetic":
        if args.format is None:  # a folder, or a file, settles it when the family has one format of that kind
            kind = [f for f in family.formats if (f in _FOLDER_FORMATS) == os.path.isdir(args.data)]
            if len(kind) == 1 and len(family.formats) == 2 and any(f in _FOLDER_FORMATS for f in family.formats):
                args.format = kind[0]
        if args.format is None and len(family.formats) > 1:
            raise ValueError(f"--format is required with a data file ({', '.join(family.formats)})")
        if args.format in _FOLDER_FORMATS:
            if not os.path.isdir(args.data):
                raise ValueError(f"{args.data}: format {args.format} reads a folder, got "
                                 f"{'a file' if os.path.exists(args.data) else 'no such folder'}")
        else:
            require_file(args.data)
    if args.out is not None:
        _check_out(args.out, runs)


def _ranks():
    """(rank, world, print on rank 0 only)."""
    from .distributed.launch import init_from_env

    rank, world = init_from_env()
    return rank, world, (print if rank == 0 else (lambda *a, **k: None))
