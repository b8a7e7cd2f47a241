"""``bridge dialplan`` subcommands (placeholder until the dial-plan work lands)."""

from __future__ import annotations

import argparse
from typing import Any


def add_dialplan_commands(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("dialplan", help="check and query dial plans")
    parser.add_subparsers(dest="dialplan_command")
