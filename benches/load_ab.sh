#!/usr/bin/env bash
# Two versions of the layer over HTTP in one run: the load_server binaries BEFORE and AFTER
# (build each with `cargo build --release -p aisoule-webhooks-comparisons --bin load_server`
# and copy it aside), their layer modes in alternating order each round, then bare axum and the
# hand-written handler from AFTER. On these VMs rates drift by up to 50% from run to run, so
# only ratios within a round compare two versions. Same method as benches/load.sh (the server
# on cpu 0, wrk on cpu 1), and the same default number of distinct deliveries: enough that none
# repeats within a run.
#
#   BEFORE=/tmp/before/load_server AFTER=/tmp/after/load_server ROUNDS=7 benches/load_ab.sh
set -euo pipefail
command -v wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
cd "$(dirname "$0")/.."
before=${BEFORE:?}; after=${AFTER:?}
rounds="${ROUNDS:-7}"; duration="${DURATION:-4}"; deliveries="${DELIVERIES:-524288}"; connections=32
data=target/load-ab-deliveries.tsv
"$after" emit "$deliveries" > "$data"
run() { # binary mode port -> rps
    local bin=$1 mode=$2 port=$3
    taskset -c 0 "$bin" "$mode" "$port" > target/load-ab-server.out &
    local pid=$!
    for _ in $(seq 100); do grep -q ready target/load-ab-server.out 2>/dev/null && break; sleep 0.05; done
    local out
    out=$(taskset -c 1 wrk -t1 -c"$connections" -d"${duration}s" -s benches/load.lua "http://127.0.0.1:$port/webhook" -- "$data")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    local non2xx; non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
    [ -n "${non2xx:-}" ] && echo "warning: $bin $mode answered $non2xx non-2xx" >&2
    echo "$out" | awk '/Requests\/sec/ {print $2}'
}
port=19080
b_bare=(); a_bare=(); a_b=(); b_hand=(); a_hand=()
for round in $(seq "$rounds"); do
    if (( round % 2 )); then
        lb=$(run "$before" layer $((port++))); la=$(run "$after" layer $((port++)))
    else
        la=$(run "$after" layer $((port++))); lb=$(run "$before" layer $((port++)))
    fi
    bare=$(run "$after" bare $((port++))); hand=$(run "$after" handwritten $((port++)))
    r() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'; }
    b_bare+=("$(r "$lb" "$bare")"); a_bare+=("$(r "$la" "$bare")"); a_b+=("$(r "$la" "$lb")")
    b_hand+=("$(r "$lb" "$hand")"); a_hand+=("$(r "$la" "$hand")")
    echo "round $round: layer before $lb, after $la, bare $bare, hand-written $hand req/s; before/bare ${b_bare[-1]}, after/bare ${a_bare[-1]}, after/before ${a_b[-1]}, before/hand ${b_hand[-1]}, after/hand ${a_hand[-1]}"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
echo "medians: layer/bare before $(median "${b_bare[@]}") after $(median "${a_bare[@]}"); layer/hand-written before $(median "${b_hand[@]}") after $(median "${a_hand[@]}"); after/before $(median "${a_b[@]}")"
