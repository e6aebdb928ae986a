"""The package's layers (docs/reference.md): a module imports only from its own layer or below,
function-local imports included, so the layout stays one a newcomer can read bottom up."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lift_localizer"

# Bottom up; names on one line share a layer.
LAYERS = (
    ("cpus", "stack_dump"),
    ("geometry", "images", "reasons", "synthetic"),
    ("nets",),
    ("weights",),
    ("backends",),
    ("features",),
    ("retrieval",),
    ("mapping",),
    ("localization",),
    ("bags",),
    ("ros",),
    ("evaluation",),
    ("training",),
    ("demo",),
    ("commands",),
    ("cli", "__main__"),
)
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def top_part(module: str) -> str | None:
    """``lift_localizer.features.lift`` → ``features``; None for the package itself."""
    parts = module.split(".")
    return parts[1] if parts[0] == "lift_localizer" and len(parts) > 1 else None


def imported_modules(path: Path, root: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in ``path`` (a file under ``root``), relative ones resolved."""
    # The package a relative import starts from: the file's folder (an __init__.py's too).
    package = ["lift_localizer", *path.relative_to(root).parent.parts]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            if node.module is None:   # ``from . import x``: each name is a module of that package
                found += [(node.lineno, f"{module}.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, module))
    return found


def upward_imports(root: Path = PACKAGE) -> list[str]:
    problems = []
    for path in sorted(root.rglob("*.py")):
        source = top_part(".".join(["lift_localizer", *path.relative_to(root).with_suffix("").parts]))
        if source is None or source not in LAYER:
            continue
        for line, module in imported_modules(path, root):
            target = top_part(module)
            if target is None or target not in LAYER:
                continue
            if LAYER[target] > LAYER[source]:
                problems.append(f"{path.relative_to(root.parent)}:{line} ({source}) imports {module} ({target})")
    return problems


def test_every_top_level_part_has_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.name != "__init__.py")}
    assert parts == set(LAYER), f"add to LAYERS: {sorted(parts - set(LAYER))}; gone: {sorted(set(LAYER) - parts)}"


def test_no_import_runs_up_the_layers():
    assert upward_imports() == []


def test_an_upward_import_is_found(tmp_path):
    """The check itself: a copy of the package with one import back up fails it."""
    import shutil

    copy = tmp_path / "lift_localizer"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("*.safetensors", "__pycache__"))
    node = copy / "nets" / "det.py"
    node.write_text(node.read_text() + "\n\ndef _late():\n    from ..ros.node import LocalizerNode  # noqa\n")
    problems = upward_imports(copy)
    assert len(problems) == 1 and "nets/det.py" in problems[0] and "lift_localizer.ros.node (ros)" in problems[0]


@pytest.mark.parametrize("path,level,module,expected", [
    ("features/lift.py", 2, "nets.det", "lift_localizer.nets.det"),
    ("features/extractors/lift.py", 2, "lift", "lift_localizer.features.lift"),
    ("ros/node.py", 1, "params", "lift_localizer.ros.params"),
])
def test_relative_imports_resolve(tmp_path, path, level, module, expected):
    file = tmp_path / "lift_localizer" / path
    file.parent.mkdir(parents=True)
    file.write_text(f"from {'.' * level}{module} import x\n")
    assert imported_modules(file, tmp_path / "lift_localizer") == [(1, expected)]
