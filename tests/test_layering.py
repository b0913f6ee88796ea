"""The package layering, checked by parsing every import (also those inside functions).

Two kinds of package: building blocks (``utils``, ``nn``, ``stats``, ``data``, ``config``) and the
groups of workflows built on them (``model``, then ``train``, then ``analysis``), with ``cli`` on
top. Blocks never import a group; a group imports the blocks and the groups before it, never one
after it; only ``cli`` imports typer or rich.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mdn_cli"

# what each building block may import from mdn_cli besides itself
BLOCKS = {
    "utils": set(),  # the user-facing error, atomic writes, process groups
    "nn": set(),  # MDN for any torch model: nothing else of mdn_cli
    "stats": set(),  # dcor, metrics and the array checks: nothing else of mdn_cli
    "data": {"utils", "stats"},
    "config": {"utils", "nn", "data"},  # nn.layer_types and data.transforms: what the spec validates
    "recipes": {"utils"},  # shipped specs of the paper's settings
}
# the groups in order: each may import every block and the groups before it
GROUPS = ["model", "train", "analysis"]
TOP = {"cli", "__main__"}  # the command line (and `python -m mdn_cli`): may import everything
TERMINAL = {"typer", "rich"}


def part_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def allowed_for(part: str) -> set[str]:
    if part in BLOCKS:
        return BLOCKS[part]
    if part in GROUPS:
        return set(BLOCKS) | set(GROUPS[: GROUPS.index(part)])
    if part in TOP:
        return set(BLOCKS) | set(GROUPS) | TOP
    return set()  # mdn_cli/__init__.py: the version only


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module == "mdn_cli":  # `from mdn_cli import distributed`
                names |= {f"mdn_cli.{alias.name}" for alias in node.names}
    return names


def test_every_module_imports_only_what_its_layer_may():
    problems = []
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 30
    for path in modules:
        part = part_of(path)
        known = set(BLOCKS) | set(GROUPS) | TOP | {"__init__"}
        assert part in known, f"{path}: not a known part of the layout; add it to BLOCKS or GROUPS"
        assert path.parent == PACKAGE or part != path.stem, f"{path}: a module at the top of mdn_cli; put it in a block or a group"
        allowed = allowed_for(part)
        for name in imports_of(path):
            top = name.split(".")[0]
            if top in TERMINAL and part != "cli":
                problems.append(f"{path.relative_to(PACKAGE)} imports {name} (only cli/ may)")
            if top != "mdn_cli" or name in ("mdn_cli", "mdn_cli.__version__"):
                continue
            target = name.split(".")[1]
            if target != part and target not in allowed:
                problems.append(f"{path.relative_to(PACKAGE)} imports {name} ({part} may import {sorted(allowed) or 'nothing else of mdn_cli'})")
    assert not problems, "\n".join(problems)


def test_the_top_of_the_package_holds_only_its_entry_points():
    assert sorted(path.name for path in PACKAGE.glob("*.py")) == ["__init__.py", "__main__.py"]


def test_the_check_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from mdn_cli.train import loop\n    import rich.table\n")
    assert imports_of(module) == {"mdn_cli.train", "rich.table"}


def test_the_groups_are_ordered():
    assert "train" in allowed_for("analysis") and "model" in allowed_for("train")
    assert "analysis" not in allowed_for("train") and "train" not in allowed_for("model")
    assert not set(GROUPS) & set().union(*BLOCKS.values())
