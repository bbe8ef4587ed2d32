#!/usr/bin/env bash
# Loads the axum receiver with the WebhookLayer, a bare axum server with the same no-op
# handler, and a hand-written verify + parse + dedup handler (what a user would write instead),
# alternating A B C A B C, with the server and wrk pinned to separate cores. Prints the rates
# per round, the medians of the paired ratios and, where perf works, the server's user-space
# cycles per request.
#
#   benches/load.sh                      # 3 rounds of 5 s each
#   ROUNDS=5 DURATION=10 DELIVERIES=1048576 benches/load.sh
#
# The deliveries must stay distinct for a whole run: once wrk wraps around, the deduplicating
# modes answer repeats, and a set that only looks a key up does less than an LRU store at
# capacity, which evicts on every fresh key. The default covers 5 s at 100 000 req/s; a run
# that wraps around is warned about.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds="${ROUNDS:-3}"
duration="${DURATION:-5}"
deliveries="${DELIVERIES:-524288}"
connections="${CONNECTIONS:-32}"

if ! command -v wrk >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
cores=$(nproc)
server_cpu=0
client_cpu=$(( cores > 1 ? 1 : 0 ))
perf_ok=0
if command -v perf >/dev/null 2>&1 && perf stat -e cycles:u true >/dev/null 2>&1; then
    perf_ok=1
fi

cargo build --release -q -p aisoule-webhooks-comparisons --bin load_server
server=target/release/load_server
data=target/load-deliveries.tsv
"$server" emit "$deliveries" > "$data"
echo "deliveries: $deliveries distinct, each about $(( $(head -n1 "$data" | cut -f2 | wc -c) - 1 )) bytes; ${duration}s per run; server on cpu $server_cpu, wrk on cpu $client_cpu"

run() { # mode port -> "requests_per_second cycles_per_request"
    local mode=$1 port=$2
    taskset -c "$server_cpu" "$server" "$mode" "$port" > target/load-server.out &
    local pid=$!
    for _ in $(seq 100); do grep -q ready target/load-server.out 2>/dev/null && break; sleep 0.05; done
    local perf_pid=""
    if [ "$perf_ok" = 1 ]; then
        perf stat -x, -e cycles:u -p "$pid" -o target/load-perf.csv &
        perf_pid=$!
    fi
    local out
    out=$(taskset -c "$client_cpu" wrk -t1 -c"$connections" -d"${duration}s" -s benches/load.lua \
        "http://127.0.0.1:$port/webhook" -- "$data")
    [ -n "$perf_pid" ] && kill -INT "$perf_pid" && wait "$perf_pid" 2>/dev/null || true
    kill "$pid"; wait "$pid" 2>/dev/null || true
    local rps requests non2xx cycles="n/a"
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    requests=$(echo "$out" | awk '/requests in/ {print $1}')
    non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
    if [ -n "${non2xx:-}" ]; then echo "warning: $mode answered $non2xx non-2xx" >&2; fi
    if [ "$mode" != bare ] && (( ${requests:-0} > deliveries )); then
        echo "warning: $mode got $requests requests, more than the $deliveries distinct deliveries: raise DELIVERIES" >&2
    fi
    if [ "$perf_ok" = 1 ] && [ -s target/load-perf.csv ]; then
        local c
        c=$(grep cycles target/load-perf.csv | cut -d, -f1)
        [[ "$c" =~ ^[0-9]+$ ]] && cycles=$(( c / requests ))
    fi
    echo "$rps $cycles"
}

ratios=()
handwritten_ratios=()
port=18080
for round in $(seq "$rounds"); do
    read -r layer_rps layer_cycles < <(run layer $((port++)))
    read -r bare_rps bare_cycles < <(run bare $((port++)))
    read -r hand_rps hand_cycles < <(run handwritten $((port++)))
    ratio=$(awk -v a="$layer_rps" -v b="$bare_rps" 'BEGIN {printf "%.3f", a / b}')
    hand_ratio=$(awk -v a="$layer_rps" -v b="$hand_rps" 'BEGIN {printf "%.3f", a / b}')
    ratios+=("$ratio")
    handwritten_ratios+=("$hand_ratio")
    echo "round $round: layer ${layer_rps} req/s (${layer_cycles} user cycles/req), bare ${bare_rps} req/s (${bare_cycles}), hand-written ${hand_rps} req/s (${hand_cycles}); layer/bare $ratio, layer/hand-written $hand_ratio"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
echo "median layer/bare ratio: $(median "${ratios[@]}") (target: 0.85 or more)"
echo "median layer/hand-written ratio: $(median "${handwritten_ratios[@]}") (target: 1 or more)"
