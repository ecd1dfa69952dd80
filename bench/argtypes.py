"""argparse types shared by the command lines (the sweep, compare, the cluster options): each
turns a bad value into one line that says what is allowed."""
from __future__ import annotations

import argparse
import re
from typing import Callable, NoReturn

PATCH = 16  # the resolutions a sweep takes are multiples of the models' patch size


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (and exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def resolution(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer (allowed: multiples of {PATCH}, at least {PATCH}, e.g. 224 384 512)")
    if value < PATCH or value % PATCH:
        raise argparse.ArgumentTypeError(f"{value} is not a multiple of {PATCH} of at least {PATCH} (allowed e.g. 224 384 512)")
    return value


def int_at_least(lowest: int) -> Callable[[str], int]:
    """An integer of at least `lowest`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer (allowed: a whole number of at least {lowest})")
        if value < lowest:
            raise argparse.ArgumentTypeError(f"{value} is not allowed (must be at least {lowest})")
        return value

    return parse


def seconds(positive: bool) -> Callable[[str], float]:
    """A finite number of seconds, more than 0 (`positive`) or at least 0."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds")
        if not (value > 0 if positive else value >= 0) or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{text} is not allowed (must be {'more than' if positive else 'at least'} 0 seconds)")
        return value

    return parse


def fraction_below_one(text: str) -> float:
    """0.1 or 10%: above 0 and below 1."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction (e.g. 0.1 or 10%)")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not allowed (a fraction above 0 and below 1, e.g. 0.1 or 10%)")
    return value


def run_name(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed (letters, digits, '.', '_', '-')")
    return text
