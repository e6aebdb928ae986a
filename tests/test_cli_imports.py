"""`lift-localizer --help` and every `lift-localizer COMMAND --help` build the whole parser in a
fresh interpreter: what that imports is what every command pays before it starts."""
import json
import subprocess
import sys

import pytest

# Builds the full parser, writes every (sub-)command's help, then the heavy packages it imported.
HELP_ALL = """
import argparse, json, sys
from lift_localizer.cli import build_parser

def walk(parser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from walk(sub)

helps = [p.format_help() for p in walk(build_parser())]
print(json.dumps({"helps": len(helps), "usage": sum(h.startswith("usage: lift-localizer") for h in helps),
                  "imported": sorted({m.split(".")[0] for m in sys.modules} & {"torch", "rclpy", "ray"})}))
"""


@pytest.fixture(scope="module")
def help_all() -> dict:
    out = subprocess.run([sys.executable, "-c", HELP_ALL], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # Every sub-command and `train`'s phases: the help above is the whole command line's.
    assert result["helps"] == result["usage"] > 15
    return result


def test_help_imports_no_ros(help_all):
    assert "rclpy" not in help_all["imported"]


def test_help_imports_no_torch(help_all):
    assert "torch" not in help_all["imported"]


def test_help_imports_no_ray(help_all):
    # Ray is build-map --ray's optional dependency, imported when a build asks for it.
    assert "ray" not in help_all["imported"]
