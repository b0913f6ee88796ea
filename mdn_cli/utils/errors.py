"""The one exception type users see: a clear message, what it is about, and what to do."""

from __future__ import annotations

import difflib
from typing import Iterable, Sequence


class MdnError(Exception):
    """A problem with the user's input (file, key, column, value); the CLI exits 2 on it.

    ``where`` names the file, key path or column; ``hint`` says what to do about it.
    """

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None):
        self.message = message
        self.where = where
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text = f"{text} Hint: {self.hint}"
        return text


def did_you_mean(word: object, options: Iterable[object], otherwise: str) -> str:
    """A hint naming the options closest to ``word`` (a typo's likely intent), else ``otherwise``.

    The one policy for every "did you mean" in the project: the closest name, with up to two more
    only when they are about as close (so ``train.epoch`` suggests ``train.epochs`` alone).
    """
    word, names = str(word), [str(option) for option in options]
    score = {name: difflib.SequenceMatcher(None, word, name).ratio() for name in difflib.get_close_matches(word, names, n=3, cutoff=0.6)}
    best = max(score.values(), default=0.0)
    close = sorted((name for name in score if score[name] >= best - 0.05), key=lambda name: (-score[name], names.index(name)))
    return f"did you mean {', '.join(f'`{name}`' for name in close)}?" if close else otherwise


def path_text(parts: Sequence) -> str:
    """A key path as the spec writes it: ``("model", "layers", 2, "type")`` -> ``model.layers[2].type``, ``(2, "resize")`` -> ``[2].resize``."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
