#!/usr/bin/env bash
# Before/after of a change: two bnkit binaries and PyTorch, run alternately in ROUNDS rounds on
# the same machine, then each side against PyTorch (scripts/compare.py) and the per-row ratio
# after/before (medians over the rounds). Run it with nothing else running.
#
# Usage: dev/compare-builds.sh BEFORE_BNKIT AFTER_BNKIT [THREADS]
# Environment: PYTHON (a Python with torch; default .venv/bin/python), ROUNDS (default 3),
#              DTYPE (default float32), OUT (default .build/compare-builds)
set -euo pipefail
cd "$(dirname "$0")/.."
before=$1 after=$2 threads=${3:-2}
PYTHON=${PYTHON:-.venv/bin/python} ROUNDS=${ROUNDS:-3} DTYPE=${DTYPE:-float32} OUT=${OUT:-.build/compare-builds}
mkdir -p "$OUT"
rm -f "$OUT"/*.json
for round in $(seq 1 "$ROUNDS"); do
    echo "round $round/$ROUNDS" >&2
    "$before" bench --threads "$threads" --dtype "$DTYPE" --json > "$OUT/before-$round.json"
    "$after" bench --threads "$threads" --dtype "$DTYPE" --json > "$OUT/after-$round.json"
    "$PYTHON" scripts/torch_bn3d.py cpu "$threads" "$DTYPE" > "$OUT/torch-$round.json"
done
for side in before after; do
    echo "== $side: $(basename "$(dirname "$(dirname "$(realpath "${!side}")")")")/$(basename "${!side}")"
    "$PYTHON" scripts/compare.py --dtype "$DTYPE" --bnkit "$OUT"/$side-*.json --torch "$OUT"/torch-*.json
done
"$PYTHON" - "$OUT" "$DTYPE" <<'PY'
import glob, json, statistics, sys
out, dtype = sys.argv[1], sys.argv[2]
def medians(side):
    rows = {}
    for path in glob.glob(f"{out}/{side}-*.json"):
        for row in json.load(open(path))["rows"]:
            if row.get("dtype", "float32") == dtype:
                rows.setdefault(("x".join(map(str, row["shape"])), row["layout"], row["op"]), []).append(row["median_us"])
    return {key: statistics.median(values) for key, values in rows.items()}
before, after = medians("before"), medians("after")
print(f"\n{'shape':<16} {'layout':<6} {'op':<9} {'before us':>10} {'after us':>10} {'after/before':>12}")
for key in before:
    if key in after:
        print(f"{key[0]:<16} {key[1]:<6} {key[2]:<9} {before[key]:>10.1f} {after[key]:>10.1f} {after[key] / before[key]:>12.3f}")
PY
