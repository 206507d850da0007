#!/bin/bash
# Quality and ALS iterations of a second night started warm (the default) and from random
# factors, from the same first night. The README's warm-start table comes from this script.
#   bash tests/benchmarks/compare_warm_start.sh FULL_DATA DAY_BEFORE_DATA WORK_DIR
# make bench-scale leaves such pairs: artifacts/bench-scale/data-1M and data-1M-day-before.
set -euo pipefail
full=$(realpath "$1") before=$(realpath "$2") work=$3
recjobs=$(realpath "$(dirname "$0")/../../.venv/bin/recjobs")
rm -rf "$work" && mkdir -p "$work/warm"
export RECJOBS_JOB_NICE=0 OPENBLAS_NUM_THREADS=1
"$recjobs" -q run --data-dir "$before" --db "$work/warm/recs.db" --artifacts "$work/warm/artifacts" --run-id night1
cp -r "$work/warm" "$work/random"
for start in warm random; do
  flag=$([ "$start" = random ] && echo "--warm-start false" || true)
  # shellcheck disable=SC2086
  "$recjobs" -v run --data-dir "$full" --db "$work/$start/recs.db" --artifacts "$work/$start/artifacts" \
    --run-id night2 $flag 2>&1 | grep -o "train night2: .*" || true
  sqlite3 "$work/$start/recs.db" "SELECT '$start', run_id, round(recall_at_10, 4), round(ndcg_at_10, 4) FROM model_runs ORDER BY run_id" 2>/dev/null \
    || "$(dirname "$recjobs")/python" -c "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute(\"SELECT run_id, round(recall_at_10, 4), round(ndcg_at_10, 4) FROM model_runs ORDER BY run_id\").fetchall())" "$work/$start/recs.db"
done
