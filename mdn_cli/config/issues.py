"""Spec problems as users see them: key path, line (or "from --set"), message and hint, all at once."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from pydantic_core import PydanticCustomError

from mdn_cli.utils.errors import MdnError, did_you_mean

Loc = tuple  # a key path as parts: ("model", "layers", 2, "type")
Problem = tuple  # (loc, message, hint) before lines are attached


@dataclasses.dataclass(frozen=True)
class SpecIssue:
    """One problem: where (key path and line, or `--set`), what, and what to do about it."""

    key_path: str
    line: int | None
    message: str
    hint: str | None = None
    from_override: bool = False

    def render(self) -> str:
        place = self.key_path or "spec"
        if self.from_override:
            place += " (from --set)"
        elif self.line is not None:
            place += f" (line {self.line})"
        text = f"{place}: {self.message.rstrip('.')}."
        return f"{text} Hint: {self.hint}" if self.hint else text


class SpecError(MdnError):
    """All the problems of a spec at once, one per line, so they can be fixed in one go."""

    def __init__(self, issues: Sequence[SpecIssue], *, where: str | None = None):
        self.issues = list(issues)
        count = len(self.issues)
        lines = "\n".join(f"  {issue.render()}" for issue in self.issues)
        super().__init__(f"{count} problem{'s' if count != 1 else ''} in the spec:\n{lines}", where=where)


def parent_path(key_path: str) -> str:
    if key_path.endswith("]"):
        return key_path[: key_path.rindex("[")]
    return key_path[: max(key_path.rfind("."), 0)]


def make_issue(key_path: str, message: str, hint: str | None, lines: dict[str, int], overridden: frozenset[str]) -> SpecIssue:
    """Attach the line of the key (or of its nearest ancestor in the file) or mark it as from --set."""
    from_override = any(key_path == o or key_path.startswith((o + ".", o + "[")) for o in overridden)
    line, probe = None, key_path
    while probe and line is None:
        line, probe = lines.get(probe), parent_path(probe)
    return SpecIssue(key_path, None if from_override else line, message, hint, from_override)


def suggest(word: Any, options: Sequence[str], what: str) -> str:
    return did_you_mean(word, options, f"known {what}: {', '.join(options)}." if options else f"there are no {what}; remove it.")


def fail(*problems: Problem) -> PydanticCustomError:
    """A validation error carrying our own (sub-loc, message, hint) problems for the translator."""
    return PydanticCustomError("spec", "{message}", {"message": "; ".join(p[1] for p in problems), "problems": list(problems)})
