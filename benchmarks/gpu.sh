#!/usr/bin/env bash
# On a machine with a GPU: run the GPU tests, time `mdn audit --device cuda` at n = 100,000 and
# 1,000,000 (x 128 features, exact, tiles and sums on the GPU) and one training epoch of the
# shipped specs on the GPU, and print the figures. Usage: bash benchmarks/gpu.sh  (after `make setup`)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: run this on a machine with a GPU')"
$PY -c "import torch; print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"

echo "== GPU tests"
$PY -m pytest -q -p no:cacheprovider -k "cuda or gpu" tests

echo "== mdn audit --device cuda (n x 128, one numeric and one categorical column, pooled and 2 strata)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for n in 100000 1000000; do
  $PY - "$work" "$n" <<'PYEOF'
import sys, h5py, numpy as np, pandas as pd
work, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
label = rng.integers(0, 2, n)
cf = rng.normal(size=n) + label
with h5py.File(f"{work}/f{n}.h5", "w") as f:
    f.create_dataset("features", data=(rng.normal(size=(n, 128)) + 0.3 * cf[:, None]).astype(np.float32), chunks=(4096, 128))
pd.DataFrame({"label": label, "cf": cf, "site": rng.choice(list("abcd"), n)}).to_csv(f"{work}/m{n}.csv", index=False)
PYEOF
  start=$(date +%s.%N)
  .venv/bin/mdn audit "$work/f$n.h5" "$work/m$n.csv" --by label --device cuda --format csv > "$work/a$n.csv"
  end=$(date +%s.%N)
  printf "n = %8d: %6.1f s (goal for 1,000,000: under 60 s)\n" "$n" "$(echo "$end - $start" | bc)"
done

echo "== one training epoch of the shipped specs on the GPU"
for spec in baseline mdn; do
  .venv/bin/mdn train "sample_data/synthetic/$spec.yaml" -o "$work/run-$spec" --device cuda --set train.epochs=1 --format json -q \
    | $PY -c "import json, sys; s = json.load(sys.stdin); print(f'$spec: {s[\"seconds\"]:.2f} s for one epoch with validation')"
done
