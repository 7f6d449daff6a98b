"""Command-line values checked where they are parsed: each flag's type says what it takes, and a bad value ends the
command with one line naming the flag, what was given and what was expected (exit status 2).

    parser = Parser(prog="unified eval")
    parser.add_argument("--batch-size", type=count, default=16)
    parser.parse_args(["--batch-size", "0"])
    # unified eval: error: argument --batch-size: expected an integer >= 1, got '0'

Every type carries `bad`, a value it refuses, so `tests/test_cli_arguments.py` tries one bad value on every flag of
every subcommand: a flag added without a checked type (or a declared free-text reason) fails that test.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, `PROG: error: MESSAGE`, exit status 2 (no usage dump); subcommand
    parsers made from it are Parsers too."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _checked(name: str, parse, expected: str, bad: str):
    def check(text: str):
        try:
            value = parse(text)
        except (TypeError, ValueError):
            value = None
        if value is None:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    check.__name__ = name  # argparse names the type in some messages
    check.expected, check.bad = expected, bad
    return check


def _integer(low: int):
    return lambda text: (lambda v: v if v >= low else None)(int(text))


def _number(low: float, inclusive: bool):
    def parse(text: str):
        value = float(text)
        ok = value == value and value != float("inf") and (value >= low if inclusive else value > low)
        return value if ok else None

    return parse


def _real(text: str):
    value = float(text)
    return value if value == value and abs(value) != float("inf") else None


def _fraction(text: str):
    value = float(text)
    return value if 0.0 <= value <= 1.0 else None


def _size(text: str):
    # bytes written 4.5GB, 900MB, 2GiB or a plain number (GB = 10^9 bytes, GiB = 2^30)
    found = re.fullmatch(r"([0-9]*\.?[0-9]+)([KMG]i?B|B)?", text.strip(), flags=re.IGNORECASE)
    return text if found and float(found.group(1)) > 0 else None


def _directory(text: str):
    return text if Path(text).is_dir() else None


def _existing(text: str):
    return text if Path(text).exists() else None


def _file(text: str):
    return text if Path(text).is_file() else None


def _new_path(text: str):
    # a file to write (or append to): it may not exist yet, but it is not a directory and its folder exists
    path = Path(text)
    return text if not path.is_dir() and (path.parent.is_dir() or str(path.parent) == "") else None


def _out_directory(text: str):
    # a folder to write into: absent (it will be made) or a folder, never a file
    return text if not Path(text).exists() or Path(text).is_dir() else None


count = _checked("count", _integer(1), "an integer >= 1", "0")
non_negative = _checked("non_negative", _integer(0), "an integer >= 0", "-1")
seed = _checked("seed", _integer(0), "an integer >= 0", "-1")
port = _checked("port", lambda t: (lambda v: v if 1 <= v <= 65535 else None)(int(t)), "a port 1..65535", "0")
positive_number = _checked("positive_number", _number(0.0, inclusive=False), "a number > 0", "0")
non_negative_number = _checked("non_negative_number", _number(0.0, inclusive=True), "a number >= 0", "-1")
real = _checked("real", _real, "a finite number", "nan")
fraction = _checked("fraction", _fraction, "a number in [0, 1]", "1.5")
size = _checked("size", _size, "a size such as 4.5GB, 900MB or 2GiB", "4.5XB")
directory = _checked("directory", _directory, "an existing directory", "/nonexistent/unified-dir")
existing = _checked("existing", _existing, "an existing file or directory", "/nonexistent/unified-path")
file = _checked("file", _file, "an existing file", "/nonexistent/unified-file")
new_file = _checked("new_file", _new_path, "a file path whose folder exists (not a directory)", "/")
out_directory = _checked("out_directory", _out_directory, "a directory to write into (not a file)",
                         str(Path(__file__).resolve()))
