"""One way in: `lift-localizer` (also `python -m lift_localizer`) and the node are the package's only
entry points; developer studies are scripts in tools/ that import the package."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lift_localizer"
# The modules that may run as a program: the command line and the ROS 2 node.
ENTRY_POINTS = {"__main__.py", "cli.py", "ros/node.py"}
STUDIES = ["fuzz", "det_approx", "jetson_estimate", "op_count", "reference_desc", "retrieval_benchmark"]


def runs_as_main(path: Path) -> bool:
    """Whether the module has an ``if __name__ == "__main__":`` block."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare) \
                and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__":
            return True
    return False


def test_only_the_command_line_and_the_node_run_as_main():
    found = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if runs_as_main(p)}
    assert found <= ENTRY_POINTS, f"make these lift-localizer commands or tools/ scripts: {sorted(found - ENTRY_POINTS)}"
    assert {"cli.py", "ros/node.py"} <= found


@pytest.mark.parametrize("study", STUDIES)
def test_tools_scripts_parse_their_options(study):
    out = subprocess.run([sys.executable, str(ROOT / "tools" / f"{study}.py"), "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith(f"usage: python tools/{study}.py")
