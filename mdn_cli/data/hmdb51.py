"""HMDB51's table, from its layout: one folder of `.avi` clips per action, the metadata in every file name.

A name ends in ``_<body>_<camera>_<people>_<viewpoint>_<quality>_<n>.avi`` (HMDB51's meta tags:
visible body part f/h/u/l, camera motion cm/nm, people np1/np2/np3, viewpoint fr/ba/le/ri,
quality bad/med/goo); for example ``April_09_brush_hair_u_nm_np1_ba_goo_0.avi``. The official
70/30 splits are files ``<action>_test_split<k>.txt`` of lines ``<name> <0|1|2>`` (1 train, 2 test,
0 unused).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mdn_cli.utils.errors import MdnError

TAGS = {
    "body": ("f", "h", "u", "l"),
    "camera": ("cm", "nm"),
    "people": ("np1", "np2", "np3"),
    "viewpoint": ("fr", "ba", "le", "ri"),
    "quality": ("bad", "med", "goo"),
}
SPLIT_CODES = {"1": "train", "2": "test", "0": None}


def name_tags(name: str) -> dict[str, str]:
    """The meta tags of one clip's file name, or an MdnError naming it."""
    parts = Path(name).stem.split("_")
    tags = dict(zip(TAGS, parts[-6:-1])) if len(parts) >= 7 else {}
    bad = [key for key, values in TAGS.items() if tags.get(key) not in values]
    if bad:
        raise MdnError(f"does not end in HMDB51's tags (_body_camera_people_viewpoint_quality_n; {', '.join(bad)} not recognised).", where=name,
                       hint="e.g. April_09_brush_hair_u_nm_np1_ba_goo_0.avi.")
    return tags


def hmdb51_table(videos: str | Path, splits: str | Path | None = None, split: int = 1, val_fraction: float = 0.1, seed: int = 0) -> pd.DataFrame:
    """One row per clip: id (the file's stem), path (relative to ``videos``), action, the five tags, and split.

    With ``splits`` (the folder of official split files) rows get train/test from split ``split``
    (clips marked 0 are left out) and ``val_fraction`` of each action's training clips become val,
    drawn with ``seed``; without, ``split`` is absent (give the spec a ``val_fraction``).
    """
    videos = Path(videos)
    rows = [{"id": path.stem, "path": str(path.relative_to(videos)), "action": path.parent.name, **name_tags(path.name)}
            for path in sorted(videos.glob("*/*.avi"))]
    if not rows:
        raise MdnError("holds no <action>/<clip>.avi files.", where=str(videos), hint="point at the folder of HMDB51's 51 action folders.")
    table = pd.DataFrame(rows)
    if splits is None:
        return table
    assigned: dict[str, str | None] = {}
    for action in table["action"].unique():
        file = Path(splits) / f"{action}_test_split{split}.txt"
        if not file.is_file():
            raise MdnError(f"no split file for action {action!r}.", where=str(file), hint=f"give the folder of the official split files (…_test_split{split}.txt).")
        for line in file.read_text().split("\n"):
            fields = line.split()
            if len(fields) == 2 and fields[1] in SPLIT_CODES:
                assigned[Path(fields[0]).stem] = SPLIT_CODES[fields[1]]
    table["split"] = table["id"].map(assigned)
    table = table[table["split"].notna()].reset_index(drop=True)
    rng = np.random.default_rng(seed)
    for _, rows_of_action in table[table["split"] == "train"].groupby("action"):
        chosen = rng.choice(rows_of_action.index.to_numpy(), round(val_fraction * len(rows_of_action)), replace=False)
        table.loc[chosen, "split"] = "val"
    return table
