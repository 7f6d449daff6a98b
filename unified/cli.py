"""The `unified` command line: `unified demo` (more subcommands arrive with the task zoo and training)."""

from __future__ import annotations

import argparse
import sys

from unified.errors import UnifiedError


def _demo(args: argparse.Namespace) -> int:
    from unified.demo import run_demo

    run_demo(args.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unified", description="One multitask, multimodal encoder-decoder.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="write a clip and run the end-to-end path on it")
    demo.add_argument("--out", default=None, help="folder for the clip (default: a new temp folder)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UnifiedError as err:  # a user's mistake: one clear line, no traceback
        print(f"unified: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
