#!/usr/bin/env bash
# Run every benchmark, one after another (they must not share the 2 cores).
#   benchmarks/run_all.sh quick   # minutes: small sizes, to check everything runs
#   benchmarks/run_all.sh full    # the issues' scales (about 2-3 hours on 2 cores)
# Each benchmark prints its own side-by-side table; output is also kept in
# out/bench/<name>.log. Full-scale results are recorded in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
profile=${1:-quick}
mkdir -p out/bench
run() {
  local name=$1; shift
  echo "== $name: $*"
  /usr/bin/time -v -o "out/bench/$name.time" "$PY" "$@" 2>&1 | tee "out/bench/$name.log"
  grep -E "Elapsed|Maximum resident" "out/bench/$name.time"
}
if [[ $profile == full ]]; then
  run bucketing      benchmarks/bench_bucketing.py --rows 10000000
  run id_mapping     benchmarks/bench_id_mapping.py --edges 10000000
  run psi            benchmarks/bench_psi.py --size 1000000 --buckets 64
  run psi_10m        benchmarks/bench_psi.py --size 10000000 --buckets 256 --two-core-only
  run island         benchmarks/bench_island.py --size 10000000 --psi-max 100000
  run covert         benchmarks/bench_covert.py --ns 10,100,1000 --db-size 10000000 --queries 1000 --micro 1000
  run persona        benchmarks/bench_persona.py --size 10000000
  run attribution_5m benchmarks/bench_attribution.py --events 5000000
  run attribution    benchmarks/bench_attribution.py --events 100000000 --no-pandas --buckets 16
  run ivt            benchmarks/bench_ivt.py --devices 1000000
  run lbs            benchmarks/bench_lbs.py --pings 100000000 --pois 100000
  run lookalike      benchmarks/bench_lookalike.py --size 1000000 --score-size 10000000 --executor local --workers 2
else
  run bucketing      benchmarks/bench_bucketing.py --rows 200000 --baseline-rows 100000
  run id_mapping     benchmarks/bench_id_mapping.py --edges 200000 --baseline-max 200000
  run psi            benchmarks/bench_psi.py --size 20000 --buckets 8
  run island         benchmarks/bench_island.py --size 200000 --psi-max 5000
  run covert         benchmarks/bench_covert.py --ns 10,100 --repeats 3 --db-size 20000 --queries 100 --micro 200
  run persona        benchmarks/bench_persona.py --size 200000 --tags 20
  run attribution    benchmarks/bench_attribution.py --events 500000
  run ivt            benchmarks/bench_ivt.py --devices 50000 --buckets 4
  run lbs            benchmarks/bench_lbs.py --pings 500000 --pois 5000 --buckets 4
  run lookalike      benchmarks/bench_lookalike.py --size 20000 --score-size 50000
fi
