"""The ``bridge`` command: ``run``, ``demo`` and ``dialplan ...``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bridge", description="SIP call-transfer bridge between 12345 and 110"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the service until SIGTERM/SIGINT")
    run.add_argument("--config", required=True, help="TOML config file")

    demo = sub.add_parser("demo", help="run the service with simulated peers on loopback")
    demo.add_argument("--once", action="store_true", help="exit after the demo script")
    demo.add_argument("--config", help="config file (default: the example config)")

    from bridge.dialplan.cli import add_dialplan_commands

    add_dialplan_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        from bridge.engine import run_service

        return run_service(args.config)
    if args.command == "demo":
        from bridge.demo import run_demo

        return run_demo(config_path=args.config, once=args.once)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    result: int = handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
