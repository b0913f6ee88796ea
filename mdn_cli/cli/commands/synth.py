"""`mdn synth`."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from mdn_cli.cli.app import (
    app,
    err_console,
)
from mdn_cli.utils.errors import MdnError


class SynthFormat(str, Enum):
    h5 = "h5"
    png = "png"
    nifti = "nifti"
    video = "video"


@app.command()
def synth(
    out_dir: Path = typer.Argument(..., help="Folder to write the data and meta.csv into."),
    per_group: int = typer.Option(500, "--per-group", min=4, help="Images per group (label)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    stages: Optional[int] = typer.Option(None, "--stages", min=2, help="Write K stages whose confounder-label tie grows from stage to stage (R-MDN's continual setting); column `stage` in meta.csv, for `data.stage_column: stage`."),
    fmt: SynthFormat = typer.Option(SynthFormat.h5, "--format", help="h5: images.h5; png: one 8-bit PNG per image; nifti: one 32^3 volume per sample (.nii.gz); video: one 24-frame 32x32 MPEG-4 .avi per sample (as HMDB51 ships). Files go to OUT_DIR/files/, named in meta.csv's `path` column."),
) -> None:
    """Write the MDN paper's synthetic data set (images with a main factor and a confounder).

    Two groups of 32x32 images; a Gaussian bump scaled by the main factor mf (top-left,
    bottom-right) and by the confounder cf (bottom-left). Splits 60/20/20 train/val/test.
    With --format png or nifti, one file per sample and a table with a `path` column (for a
    spec's `data.path_column: path`); nifti makes 3D volumes with the bumps in octants. video
    makes the idea move: the label is the direction a blob crosses the frame in (its speed mf
    overlaps between the groups), the confounder cf is the scene's lighting and `shake` a
    camera shake (a nuisance); for a spec's `data.clip`.

    With --stages K, K such sets (per-group images per group each): from the paper's set, the
    groups' cf ranges move apart and their mf ranges together, stage by stage, until mf no
    longer tells them apart and cf does entirely.

    Example: mdn synth data/synthetic --per-group 500 --seed 0
    Example: mdn synth data/png --format png --per-group 150
    Example: mdn synth data/stages --stages 5
    Example: mdn synth data/video --format video --per-group 150
    """
    from mdn_cli.data.synthetic import make_staged_synthetic, make_synthetic, make_synthetic_3d, write_dataset

    if stages is not None and fmt in (SynthFormat.nifti, SynthFormat.video):
        raise MdnError("--stages writes 2D images.", where="--format", hint="use --format h5 or png with --stages.")
    if fmt == SynthFormat.h5:
        dataset = make_synthetic(per_group, seed) if stages is None else make_staged_synthetic(per_group, stages, seed)
        h5_path, csv_path = write_dataset(out_dir, dataset.images, dataset.table)
        err_console().print(f"wrote {h5_path} ({len(dataset.table)} images) and {csv_path}", markup=False)
        return
    from mdn_cli.data.readers import write_image_study
    from mdn_cli.utils.fileio import atomic_path

    if fmt == SynthFormat.video:
        from mdn_cli.data.synthetic import make_synthetic_video
        from mdn_cli.data.video import write_video_study

        dataset = make_synthetic_video(per_group, seed)
        table = write_video_study(out_dir, dataset.images, dataset.table)
    else:
        if fmt == SynthFormat.png:
            dataset = make_synthetic(per_group, seed) if stages is None else make_staged_synthetic(per_group, stages, seed)
        else:
            dataset = make_synthetic_3d(per_group, seed)
        table = write_image_study(out_dir, dataset.images, dataset.table, fmt.value)
    csv_path = out_dir / "meta.csv"
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False)
    err_console().print(f"wrote {len(table)} {fmt.value} files to {out_dir / 'files'} and {csv_path} (paths in column `path`)", markup=False)
