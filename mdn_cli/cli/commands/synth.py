"""`mdn synth`."""

from __future__ import annotations

from pathlib import Path

import typer

from mdn_cli.cli.app import (
    app,
    err_console,
)


@app.command()
def synth(
    out_dir: Path = typer.Argument(..., help="Folder to write images.h5 and meta.csv into."),
    per_group: int = typer.Option(500, "--per-group", min=4, help="Images per group (label)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
) -> None:
    """Write the MDN paper's synthetic data set (images with a main factor and a confounder).

    Two groups of 32x32 images; a Gaussian bump scaled by the main factor mf (top-left,
    bottom-right) and by the confounder cf (bottom-left). Splits 60/20/20 train/val/test.

    Example: mdn synth data/synthetic --per-group 500 --seed 0
    """
    from mdn_cli.data.synthetic import make_synthetic, write_dataset

    dataset = make_synthetic(per_group, seed)
    h5_path, csv_path = write_dataset(out_dir, dataset.images, dataset.table)
    err_console().print(f"wrote {h5_path} ({len(dataset.table)} images) and {csv_path}", markup=False)
