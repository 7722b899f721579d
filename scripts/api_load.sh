#!/usr/bin/env bash
# Load test of the two hot API reads: GET /api/v1/briefs/today and GET /api/v1/insights?q=...
#
#   scripts/api_load.sh [WORKERS] [DURATION] [CONNECTIONS]      (defaults: 1 10s 16)
#
# Seeds a throw-away SQLite database under var/bench/ (20,000 embedded insights, 50 users with a key and
# today's brief), serves it with uvicorn on 127.0.0.1:18931 (rate limits raised so the limiter is exercised but
# never refuses), warms each URL once, then runs wrk (Debian package `wrk`) from a second process with a Lua
# script that rotates over the 50 keys. Besides wrk's requests/s and latency percentiles it prints the server's
# CPU time per request (utime+stime from /proc), which says what the code costs independent of other load
# on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKERS=${1:-1}
DURATION=${2:-10s}
CONNS=${3:-16}
PORT=18931
DIR=var/bench
mkdir -p "$DIR/var"
PY=${PYTHON:-.venv/bin/python}
if [[ ! -f $DIR/api.db || ! -f $DIR/keys.lua ]]; then
  "$PY" scripts/api_load.py seed --db "$DIR/api.db" --insights 20000 --users 50 --lua "$DIR/keys.lua" > "$DIR/seed.json"
fi
export DATABASE_URL="sqlite:///$PWD/$DIR/api.db" PODBRIEF_VAR_DIR="$PWD/$DIR/var"
export PODBRIEF_API_RATE_PER_SECOND=100000 PODBRIEF_API_BURST=100000
"$PY" -m uvicorn app.web.main:app --host 127.0.0.1 --port $PORT --workers "$WORKERS" \
  --log-level warning --no-access-log > "$DIR/uvicorn.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/openapi.json" && break; sleep 1; done
KEY=$(grep -o 'pb_[^"]*' "$DIR/keys.lua" | head -1)

cpu_ticks() {  # utime+stime of the server and its worker processes
  local total=0 pid
  for pid in $SERVER $(pgrep -P $SERVER || true); do
    total=$((total + $(awk '{print $14 + $15}' /proc/$pid/stat)))
  done
  echo $total
}

for URL in "/api/v1/briefs/today" "/api/v1/insights?q=how%20does%20sleep%20help%20memory"; do
  # Warm every worker: loads the vector index and the query's embedding (the model-bound part, then
  # LRU-cached per process). Concurrent requests so that each uvicorn worker gets some.
  for _ in 1 2 3; do
    pids=()
    for _ in $(seq 1 $((WORKERS * 4))); do
      curl -s -o /dev/null -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT$URL" --max-time 120 &
      pids+=($!)
    done
    wait "${pids[@]}"  # only the curls: a bare `wait` would also wait for the server
  done
  before=$(cpu_ticks)
  result=$(wrk -t1 -c"$CONNS" -d"$DURATION" -s "$DIR/keys.lua" "http://127.0.0.1:$PORT$URL" | tail -1)
  after=$(cpu_ticks)
  reqs=$(echo "$result" | sed -E 's/.*requests\/s=([0-9.]+).*/\1/')
  secs=${DURATION%s}
  cpu_ms=$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v r="$reqs" -v s="$secs" \
    'BEGIN { n = r * s; printf "%.2f", (n > 0 ? t / hz * 1000 / n : 0) }')
  echo "GET $URL workers=$WORKERS conns=$CONNS $result server_cpu_ms_per_req=$cpu_ms load=$(cut -d' ' -f1 /proc/loadavg)"
done
