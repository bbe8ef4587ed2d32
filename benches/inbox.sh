#!/usr/bin/env bash
# The durable inbox under load, over HTTP: durably acknowledged deliveries per second (closed
# loop) and acknowledgement latency at a fixed offered load (open loop), for inline mode and the
# inbox on SQLite and PostgreSQL, each with group commit (the default) and one commit per
# request (`max_batch(1)`). Every store keeps its default durability: SQLite synchronous=FULL,
# PostgreSQL fsync=on and synchronous_commit=on.
#
# Each mode runs once per round, in alternating order (forward, then backwards), on a new store
# (a new SQLite file, a new PostgreSQL schema) per phase. The server (and PostgreSQL) run on
# cpu 0 and the load generator on cpu 1. After each phase the script waits for the inbox's
# workers, which run a no-op handler, to drain the queue: every acknowledged delivery must end
# `done`.
#
#   benches/inbox.sh                                  # 3 rounds: 5 s closed loop, 10 s at 2 000/s
#   ROUNDS=3 DURATION=10 RATE=2000 OPEN_DURATION=20 benches/inbox.sh
#   MODES="inbox-sqlite inline" benches/inbox.sh      # a subset
#   INBOX_WORKERS=64 benches/inbox.sh                 # the inbox with 64 workers instead of 4
#
# PostgreSQL runs when `initdb` and `postgres` are on PATH or in /usr/lib/postgresql/*/bin: the
# script creates a throwaway cluster in its temporary directory (as `nobody` when run as root)
# and deletes it on exit. Without them the PostgreSQL rows are skipped, with a message.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds="${ROUNDS:-3}"
duration="${DURATION:-5}"                 # closed loop, seconds
connections="${CONNECTIONS:-64}"          # closed loop
rate="${RATE:-2000}"                      # open loop, requests per second
open_duration="${OPEN_DURATION:-10}"      # open loop, seconds
open_connections="${OPEN_CONNECTIONS:-128}"
closed_deliveries="${CLOSED_DELIVERIES:-300000}"
drain_wait="${DRAIN_WAIT:-60}"            # seconds to wait for the queue to drain after a phase
modes=(${MODES:-inline inbox-sqlite inbox-sqlite-single inbox-postgres inbox-postgres-single})

cores=$(nproc)
server_cpu=0
client_cpu=$(( cores > 1 ? 1 : 0 ))

work=$(mktemp -d "${TMPDIR:-/tmp}/aisoule-inbox-bench.XXXXXX")
chmod 711 "$work"
server_pid=""
server_port=""
pg_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    if [ -n "$pg_pid" ]; then
        kill -INT "$pg_pid" 2>/dev/null || true # fast shutdown
        for _ in $(seq 100); do kill -0 "$pg_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pg_pid" 2>/dev/null || true
        wait "$pg_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    local port
    while :; do
        port=$(( 20000 + RANDOM % 20000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return; fi
    done
}

nice cargo build --release -q -j "${JOBS:-1}" -p aisoule-webhooks-comparisons --features inbox \
    --bin load_server --bin load_client
server=target/release/load_server
client=target/release/load_client

# The machine, and whether a sync reaches the disk.
fs_type=$(findmnt -no FSTYPE -T "$work" 2>/dev/null || df -T "$work" | awk 'NR == 2 {print $2}')
fs_source=$(findmnt -no SOURCE -T "$work" 2>/dev/null || echo "?")
cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "machine: $cores cores ($cpu_model), $(uname -sr), $(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 1024 )) GiB; temp dir on $fs_type ($fs_source); load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
sync_seconds=$(LC_ALL=C dd if=/dev/zero of="$work/fsync-probe" bs=4096 count=1000 oflag=dsync 2>&1 \
    | awk '/copied/ {for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^s,?$/) print $i}')
rm -f "$work/fsync-probe"
sync_us=$(awk -v s="$sync_seconds" 'BEGIN {printf "%.0f", s * 1e6 / 1000}')
device=$(basename "$fs_source" | sed 's/[0-9]*$//')
cache=$(cat "/sys/block/$device/queue/write_cache" 2>/dev/null || echo "unknown")
if [ "$sync_us" -lt 20 ]; then
    verdict="too fast for a flush to stable storage: syncs are absorbed by a volatile cache, so the figures overstate what a real disk sustains"
else
    verdict="a real flush round trip from this guest (whether the host's own cache honours it cannot be seen from here)"
fi
echo "fsync: 1000 synced 4 KiB writes (dd oflag=dsync) in ${sync_seconds}s, ${sync_us} µs each; device write cache: $cache; $verdict"

# PostgreSQL, when installed: a throwaway cluster pinned with the server, fsync on.
pg_bin=""
if command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1; then
    pg_bin=$(dirname "$(command -v initdb)")
else
    pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
    [ -n "$pg_bin" ] && [ -x "$pg_bin/postgres" ] || pg_bin=""
fi
pg_url=""
if printf '%s\n' "${modes[@]}" | grep -q postgres; then
    if [ -z "$pg_bin" ]; then
        echo "PostgreSQL is not installed (no initdb and postgres on PATH or in /usr/lib/postgresql/*/bin): skipping the PostgreSQL rows"
        kept=()
        for m in "${modes[@]}"; do [[ "$m" == *postgres* ]] || kept+=("$m"); done
        modes=("${kept[@]}")
    else
        mkdir "$work/pg"
        as_pg=()
        if [ "$(id -u)" = 0 ]; then # PostgreSQL refuses to run as root
            chown nobody "$work/pg"
            as_pg=(setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups)
        fi
        "${as_pg[@]}" "$pg_bin/initdb" -D "$work/pg/data" -U postgres --auth=trust \
            --encoding=UTF8 --locale=C --no-sync > "$work/pg/initdb.log" 2>&1 \
            || { cat "$work/pg/initdb.log"; exit 1; }
        pg_port=$(free_port)
        (cd "$work/pg" && exec taskset -c "$server_cpu" "${as_pg[@]}" "$pg_bin/postgres" \
            -D "$work/pg/data" -p "$pg_port" -k "$work/pg" -c listen_addresses=127.0.0.1 \
            -c fsync=on -c synchronous_commit=on -c full_page_writes=on -c max_connections=100 \
            > "$work/pg/postgres.log" 2>&1) &
        pg_pid=$!
        for _ in $(seq 600); do grep -q "ready to accept connections" "$work/pg/postgres.log" && break; sleep 0.1; done
        grep -q "ready to accept connections" "$work/pg/postgres.log" \
            || { cat "$work/pg/postgres.log"; echo "PostgreSQL did not start" >&2; exit 1; }
        pg_url="postgres://postgres@127.0.0.1:$pg_port/postgres"
        echo "postgresql: $("$pg_bin/postgres" --version), throwaway cluster on port $pg_port, on cpu $server_cpu with the server; fsync=on, synchronous_commit=on"
    fi
fi

open_requests=$(( rate * open_duration ))
total=$(( closed_deliveries + open_requests ))
data="$work/deliveries.tsv"
"$server" emit "$total" > "$data"
echo "deliveries: $total distinct, each about $(( $(head -n1 "$data" | cut -f2 | wc -c) - 1 )) bytes; closed loop ${duration}s on $connections connections, open loop ${rate}/s for ${open_duration}s on $open_connections connections; server on cpu $server_cpu, load on cpu $client_cpu; inbox workers: ${INBOX_WORKERS:-the default}"

start_server() { # mode tag -> sets server_pid and server_port
    local mode=$1 tag=$2 port
    port=$(free_port)
    local args=("$mode" "$port")
    case "$mode" in
        inbox-sqlite*) args+=("$work/$tag.sqlite3") ;;
        inbox-postgres*) args+=("$pg_url" "bench_${tag//-/_}") ;;
    esac
    taskset -c "$server_cpu" "$server" "${args[@]}" > "$work/server.out" 2>&1 &
    server_pid=$!
    for _ in $(seq 300); do
        grep -q ready "$work/server.out" 2>/dev/null && break
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.05
    done
    grep -q ready "$work/server.out" || { cat "$work/server.out" >&2; exit 1; }
    server_port=$port
}

stop_server() {
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}

stats() { # port -> "pending=… running=… done=… …"
    curl -sf "http://127.0.0.1:$1/stats" || echo "unavailable"
}

field() { # name line -> value
    echo "$2" | tr ' ' '\n' | awk -F= -v k="$1" '$1 == k {print $2}'
}

drain() { # mode port acked -> "drained seconds rate" : whether every acknowledged delivery ended done
    local mode=$1 port=$2 acked=$3
    if [ "$mode" = inline ]; then echo "n/a - -"; return; fi
    local start now line done0 done pending running waited
    start=$(date +%s.%N)
    line=$(stats "$port"); done0=$(field done "$line")
    while :; do
        line=$(stats "$port")
        pending=$(field pending "$line"); running=$(field running "$line"); done=$(field done "$line")
        now=$(date +%s.%N)
        waited=$(awk -v a="$start" -v b="$now" 'BEGIN {printf "%.1f", b - a}')
        if [ "$pending" = 0 ] && [ "$running" = 0 ]; then break; fi
        if awk -v w="$waited" -v m="$drain_wait" 'BEGIN {exit !(w >= m)}'; then break; fi
        # After 10 s, give up early when the rate so far cannot drain the rest within the wait.
        if awk -v w="$waited" -v m="$drain_wait" -v a="$done0" -v b="$done" -v left=$(( pending + running ))             'BEGIN {exit !(w >= 10 && left * w > (m - w) * (b - a))}'; then break; fi
        sleep 0.5
    done
    local per_s
    per_s=$(awk -v a="$done0" -v b="$done" -v w="$waited" 'BEGIN {printf "%.0f", (w > 0 ? (b - a) / w : 0)}')
    if [ "$pending" = 0 ] && [ "$running" = 0 ] && [ "$done" = "$acked" ]; then
        echo "yes_in ${waited} ${per_s}"
    elif [ "$pending" = 0 ] && [ "$running" = 0 ]; then
        echo "MISMATCH:done=${done},acked=${acked}_after ${waited} ${per_s}"
    else
        echo "no:$(( pending + running ))_left_after ${waited} ${per_s}"
    fi
}

results="$work/results.tsv"
: > "$results"
run_mode() { # round mode
    local round=$1 mode=$2 expect=accepted port out drained
    [ "$mode" = inline ] && expect=200
    # Throughput: closed loop on a new store.
    start_server "$mode" "r${round}-${mode}-closed"; port=$server_port
    out=$(taskset -c "$client_cpu" "$client" closed "http://127.0.0.1:$port/webhook" "$data" \
        0 "$closed_deliveries" "$connections" "$duration" "$expect")
    drained=$(drain "$mode" "$port" "$(field acked "$out")")
    stop_server
    local c_rate c_nack c_p99 c_exh
    c_rate=$(field rate "$out"); c_p99=$(field p99_ms "$out"); c_exh=$(field exhausted "$out")
    c_nack=$(( $(field refused "$out") + $(field errors "$out") ))
    [ "$c_exh" = yes ] && echo "warning: $mode ran out of deliveries; raise CLOSED_DELIVERIES" >&2
    read -r c_drained c_wait c_drain_rate <<< "$drained"
    # Latency: open loop at a fixed rate, on another new store.
    start_server "$mode" "r${round}-${mode}-open"; port=$server_port
    out=$(taskset -c "$client_cpu" "$client" open "http://127.0.0.1:$port/webhook" "$data" \
        "$closed_deliveries" "$open_requests" "$rate" "$open_duration" "$open_connections" "$expect")
    drained=$(drain "$mode" "$port" "$(field acked "$out")")
    stop_server
    local o_nack
    o_nack=$(( $(field refused "$out") + $(field errors "$out") ))
    read -r o_drained o_wait o_drain_rate <<< "$drained"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$mode" \
        "$c_rate" "$c_p99" "$c_nack" "$c_drained" "$c_wait" "$c_drain_rate" \
        "$(field p50_ms "$out")" "$(field p99_ms "$out")" "$(field max_ms "$out")" "$o_nack" \
        "$o_drained" "$o_wait" "$o_drain_rate" >> "$results"
    echo "round $round $mode: closed ${c_rate} acks/s (p99 ${c_p99} ms, ${c_nack} not acked, drained: ${c_drained//_/ } ${c_wait} s at ${c_drain_rate}/s); open ${rate}/s: p50 $(field p50_ms "$out") p99 $(field p99_ms "$out") max $(field max_ms "$out") ms, ${o_nack} not acked, drained: ${o_drained//_/ } ${o_wait} s at ${o_drain_rate}/s"
}

for round in $(seq "$rounds"); do
    order=("${modes[@]}")
    if (( round % 2 == 0 )); then
        order=()
        for (( i = ${#modes[@]} - 1; i >= 0; i-- )); do order+=("${modes[i]}"); done
    fi
    for mode in "${order[@]}"; do run_mode "$round" "$mode"; done
done

median() { sort -g | awk '{a[NR] = $1} END {if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
column_of() { awk -F'\t' -v m="$1" -v c="$2" '$2 == m {print $c}' "$results"; }
echo
echo "| mode | acks/s, closed loop ($connections conns, ${duration} s) | p50 / p99 / max at ${rate}/s (ms) | not acked | drained after the closed loop | drained after the open loop |"
echo "|---|---|---|---|---|---|"
for mode in "${modes[@]}"; do
    acks=$(column_of "$mode" 3 | median | awk '{printf "%.0f", $1}')
    rounds_acks=$(column_of "$mode" 3 | awk '{printf "%s%.0f", (NR > 1 ? " / " : ""), $1}')
    p50=$(column_of "$mode" 9 | median); p99=$(column_of "$mode" 10 | median)
    max=$(column_of "$mode" 11 | sort -g | tail -n1)
    rounds_p99=$(column_of "$mode" 10 | paste -sd/ | sed 's#/# / #g')
    nack=$(awk -F'\t' -v m="$mode" '$2 == m {n += $5 + $12} END {print n + 0}' "$results")
    if [ "$mode" = inline ]; then
        c_drain="n/a"; o_drain="n/a"
    else
        c_drain=$(awk -F'\t' -v m="$mode" '$2 == m {d = $6; sub(":", ", ", d); gsub("_", " ", d); printf "%s%s %s s (%s/s)", (s++ ? "; " : ""), d, $7, $8}' "$results")
        o_drain=$(awk -F'\t' -v m="$mode" '$2 == m {d = $13; sub(":", ", ", d); gsub("_", " ", d); printf "%s%s %s s (%s/s)", (s++ ? "; " : ""), d, $14, $15}' "$results")
    fi
    echo "| $mode | $acks ($rounds_acks) | $p50 / $p99 / $max (p99: $rounds_p99) | $nack | $c_drain | $o_drain |"
done
echo
echo "acks/s: median of the rounds (each round in brackets). Latencies: median p50 and p99 of the rounds (each round's p99 in brackets), and the largest max; measured from each request's scheduled send time. Drained: every acknowledged delivery ended done, how long after the load that took, and the rate the workers drained at meanwhile."
