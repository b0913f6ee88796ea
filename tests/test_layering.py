"""The package layering, checked by parsing every import (also those inside functions).

Building blocks never import the workflows above them; only ``cli`` imports typer or rich.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mdn_cli"

# what each part of mdn_cli may import from mdn_cli (besides itself); "*" is everything
ALLOWED = {
    "nn": set(),
    "stats": {"validation", "errors"},
    "validation": {"errors"},
    "errors": set(),
    "fileio": {"errors"},
    "data": {"errors", "fileio", "validation"},
    "config": {"errors", "nn", "data"},  # data.transforms parses the transform lists
    "cli": {"*"},
    "__main__": {"*"},  # `python -m mdn_cli`: the entry point
    "__init__": set(),
}
# the workflows may import every building block and each other, never the cli
WORKFLOWS = {"models", "train", "finetune", "training_options", "audit", "extract", "layers", "refit", "residualize", "report", "runs",
             "distributed", "pack", "evaluate", "crossval"}
TERMINAL = {"typer", "rich"}


def part_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


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
        assert part in ALLOWED or part in WORKFLOWS, f"{path}: not a known part of the layout; add it to ALLOWED or WORKFLOWS"
        allowed = ALLOWED.get(part, set())
        for name in imports_of(path):
            top = name.split(".")[0]
            if top in TERMINAL and part != "cli":
                problems.append(f"{path.relative_to(PACKAGE)} imports {name} (only cli/ may)")
            if top != "mdn_cli" or name == "mdn_cli":
                continue
            target = name.split(".")[1]
            if target == part or "*" in allowed:
                continue
            if part in WORKFLOWS:
                if target == "cli":
                    problems.append(f"{path.relative_to(PACKAGE)} imports {name} (workflows never import cli)")
                continue
            if target not in allowed:
                problems.append(f"{path.relative_to(PACKAGE)} imports {name} ({part} may import {sorted(allowed) or 'nothing else of mdn_cli'})")
    assert not problems, "\n".join(problems)


def test_the_check_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from mdn_cli.train import train\n    import rich.table\n")
    assert imports_of(module) == {"mdn_cli.train", "rich.table"}
