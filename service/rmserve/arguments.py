"""argparse types: a bad value is argparse's one-line usage error naming the flag, before anything loads."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from rmserve.core.repository import is_model_name


def _number(text: str, kind: Callable[[str], float], what: str, accept: Callable[[float], bool]) -> float:
    try:
        value = kind(text)
    except ValueError:
        value = math.nan  # accepted by no range
    if not (math.isfinite(value) and accept(value)):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """`--epochs 3`: a whole number of at least 1."""
    return int(_number(text, int, "a whole number of at least 1", lambda value: value >= 1))


def non_negative_int(text: str) -> int:
    """`--pretrain-epochs 0`: a whole number of at least 0."""
    return int(_number(text, int, "a whole number of at least 0", lambda value: value >= 0))


def positive_float(text: str) -> float:
    """`--learning-rate 3e-4`: a number above 0."""
    return _number(text, float, "a number above 0", lambda value: value > 0)


def at_least_one(text: str) -> float:
    """`--padding-ratios 1.25`: a number of at least 1."""
    return _number(text, float, "a number of at least 1", lambda value: value >= 1)


MIN_SEQUENCE_TOKENS = 16


def sequence_length(text: str) -> int:
    """`--max-length 256`: tokens per sequence; fewer than 16 leave no room for a prompt and a response."""
    what = f"a whole number of at least {MIN_SEQUENCE_TOKENS}"
    return int(_number(text, int, what, lambda value: value >= MIN_SEQUENCE_TOKENS))


def fraction(text: str) -> float:
    """`--dev-fraction 0.1`: strictly between 0 and 1."""
    return _number(text, float, "between 0 and 1 (exclusive)", lambda value: 0 < value < 1)


def input_file(text: str) -> Path:
    """A file to read: it must exist and be a file, not a directory."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a directory; pass a file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no file at {path}")
    return path


def model_name(text: str) -> str:
    """A name in the model repository: one plain directory name."""
    if not is_model_name(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a model name (letters, digits, '.', '_', '-'; no paths)")
    return text


def server_url(text: str) -> str:
    """`http://rm:8000`: an http(s) URL with a host."""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a server URL; write it like http://rm:8000")
    return text
