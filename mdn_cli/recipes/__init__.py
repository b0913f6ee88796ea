"""Recipes: ready specs of the MDN paper's settings (synthetic, faces, video, MRI), shipped as YAML files in this
package, listed and copied by `mdn recipes` the way torchtune lists and copies its configs.

Each file starts with ``# recipe:``, ``# about:`` and ``# run:`` lines, then says where its
settings come from and the data layout it expects.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from mdn_cli.utils.errors import MdnError, did_you_mean


@dataclass(frozen=True)
class Recipe:
    name: str
    about: str
    command: str
    text: str


def recipe_names() -> list[str]:
    return sorted(entry.name.removesuffix(".yaml") for entry in resources.files(__name__).iterdir() if entry.name.endswith(".yaml"))


def recipe(name: str) -> Recipe:
    """The recipe ``name``, with the description and command of its header; an unknown name is an ``MdnError``."""
    names = recipe_names()
    if name not in names:
        raise MdnError(f"no recipe {name!r}.", where="NAME", hint=did_you_mean(name, names, f"recipes: {', '.join(names)} (`mdn recipes` lists them)."))
    text = resources.files(__name__).joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    header = dict(line[2:].split(": ", 1) for line in text.splitlines()[:3])
    return Recipe(name, header["about"], header["run"], text)
