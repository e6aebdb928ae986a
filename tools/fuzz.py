"""Throw hostile input at the node and the command line, and print a table of what each did
(lift_localizer/evaluation/fuzz.py says which inputs and what passes).

    python tools/fuzz.py [--only node|cli] [--match REGEX] [--json rows.json] [--keep DIR]

Exit code 1 when any input was not handled.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict
from pathlib import Path

from lift_localizer.evaluation import fuzz


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tools/fuzz.py", description=fuzz.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=("node", "cli"), default=None, help="one half only (default: both)")
    p.add_argument("--match", type=re.compile, default=None, metavar="REGEX",
                   help="only the inputs whose name matches (default: all)")
    p.add_argument("--max-memory-mb", type=float, default=fuzz.MAX_MEMORY_MB,
                   help="peak resident memory allowed (default %(default)s)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    p.add_argument("--keep", type=Path, default=None,
                   help="build the crafted files here and keep them; the synthetic room (map, bags) kept by an "
                        "earlier run is used again")
    args = p.parse_args(argv)
    rows = fuzz.run_cases(args.only, args.match, args.max_memory_mb, args.keep)
    fuzz.print_table(rows)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
