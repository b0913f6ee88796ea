"""How far is a trained MDN layer from whole-set OLS, and how much could OLS remove? One run, one layer.

For the layer in front of an MDN layer (fc1 in the shipped specs) of a trained run: the beta the
MDN layer uses in eval mode (running beta, R-MDN's state, PMDN's learned beta) against the OLS beta
of the layer's training-set features on the design, and within each class of the validation set
the dcor² with each metadata column of the features before MDN, after it, and after removing the
OLS fit instead. Separates "beta has not converged" (after MDN >> after OLS) from "the features
carry a dependence no linear removal takes out" (after OLS stays high).

    .venv/bin/python benchmarks/beta_vs_ols.py RUNDIR [--layer fc1] [--checkpoint last]
"""

from __future__ import annotations

import argparse

import torch

from mdn_cli.model.checkpoint import load_run
from mdn_cli.nn import metadata
from mdn_cli.stats import dcor2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--layer", default="fc1")
    parser.add_argument("--checkpoint", default="last")
    args = parser.parse_args()
    loaded = load_run(args.run_dir, args.checkpoint)
    data = loaded.training_data()
    network = loaded.network.eval()
    placement = network.mdn_placement()
    if args.layer not in placement:
        raise SystemExit(f"{args.layer} has no MDN layer after it (layers with one: {', '.join(placement)})")
    modules = dict(network.body.named_modules())
    mdn = modules[placement[args.layer]]
    q = mdn.num_preserved

    def features(split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        before, after, designs, labels = [], [], [], []
        hooks = [
            modules[args.layer].register_forward_hook(lambda _m, _i, out: before.append(out.detach().flatten(1))),
            mdn.register_forward_hook(lambda _m, _i, out: after.append(out.detach().flatten(1))),
        ]
        with torch.no_grad():
            for _rows, x, design, y in data.batches(split, 200):
                with metadata(network, design):
                    network(x)
                designs.append(design)
                labels.append(y)
        for hook in hooks:
            hook.remove()
        return torch.cat(before).double(), torch.cat(after).double(), torch.cat(designs).double(), torch.cat(labels)

    before, _, design, _ = features("train")
    ols = torch.linalg.lstsq(design, before).solution
    used = mdn.inference_beta().detach().double()
    names = data.design.column_names
    print(f"{args.run_dir}: {type(mdn).__name__} after {args.layer}, {before.shape[1]} features")
    print("| design column | norm of the layer's beta row | norm of the OLS beta row (train) |")
    print("|---|---:|---:|")
    for i, name in enumerate(names):
        print(f"| {name}{' (kept)' if i < q else ''} | {float(used[i].norm()):.3f} | {float(ols[i].norm()):.3f} |")
    before, after, design, labels = features("val")
    residual = before - design[:, q:] @ ols[q:]
    metadata_columns = [(i, name) for i, name in enumerate(names) if i >= q and name != "intercept"]
    print("\n| validation class | column | dcor² before MDN | after MDN | after OLS removal |")
    print("|---|---|---:|---:|---:|")
    for c in sorted(set(labels.tolist())):
        rows = labels == c
        for i, name in metadata_columns:
            column = design[rows, i].numpy()
            cells = [dcor2(f[rows].numpy(), column) for f in (before, after, residual)]
            print(f"| {c:g} | {name} | " + " | ".join(f"{v:.3f}" for v in cells) + " |")


if __name__ == "__main__":
    main()
