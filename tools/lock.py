#!/usr/bin/env python3
"""Write requirements.lock: the exact versions pip's resolver picks for requirements.txt today.

    python3 tools/lock.py [--requirements requirements.txt] [--output requirements.lock]
    make lock                                   # the same

The resolution runs in a fresh temporary venv (`pip install --dry-run --ignore-installed --report`),
so nothing already installed leaks into the lock, and nothing is installed. The lock holds every
distribution pip would install, dependencies included, plus the pip that resolved them; `make`
installs from it, so a fresh machine gets the versions CI tested. The resolution is for this
machine's Python and platform (written in the header); `make test-latest` checks the newest
versions that requirements.txt allows.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path


def resolve(requirements: Path, python: str) -> tuple[list[tuple[str, str]], str]:
    """(name, version) of every distribution pip would install for ``requirements``, and pip's version."""
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        py = str(venv / "bin" / "python")
        subprocess.run([py, "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
        pip_version = subprocess.run([py, "-m", "pip", "--version"], check=True, capture_output=True,
                                     text=True).stdout.split()[1]
        report = Path(tmp) / "report.json"
        subprocess.run([py, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
                        "--report", str(report), "-r", str(requirements)], check=True)
        installs = json.loads(report.read_text())["install"]
    pins = sorted(((i["metadata"]["name"], i["metadata"]["version"]) for i in installs), key=lambda p: p[0].lower())
    return pins, pip_version


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requirements", type=Path, default=Path("requirements.txt"), help="(default %(default)s)")
    p.add_argument("--output", type=Path, default=Path("requirements.lock"), help="(default %(default)s)")
    p.add_argument("--python", default=sys.executable, help="interpreter to resolve for (default: this one)")
    args = p.parse_args(argv)
    pins, pip_version = resolve(args.requirements, args.python)
    py = subprocess.run([args.python, "-c", "import platform; print(platform.python_version())"],
                        check=True, capture_output=True, text=True).stdout.strip()
    lines = [
        f"# Exact versions for {args.requirements}, resolved by pip {pip_version} for Python {py} on "
        f"{platform.system()} {platform.machine()}.",
        "# Made by `make lock` (tools/lock.py); `make` installs from this file. Do not edit by hand.",
        f"pip=={pip_version}",
    ]
    # A local version label (torch's "+cpu") names one build; the plain version installs anywhere.
    lines += [f"{name}=={version.split('+')[0]}" for name, version in pins if name.lower() != "pip"]
    args.output.write_text("\n".join(lines) + "\n")
    print(f"{args.output}: {len(pins)} distributions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
