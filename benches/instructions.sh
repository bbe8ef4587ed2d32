#!/usr/bin/env bash
# The tower layer's cost per delivery, in instructions (callgrind), over a bare axum handler,
# the actix-web middleware's over a bare actix-web handler, Event::parse's cost against a
# #[derive(Deserialize)] struct borrowing every field, and the heap allocations per delivery
# (dhat) the layer adds.
# Runs each mode at two counts and divides the difference, so start-up and the building of
# each signed request cancel out. Instruction counts do not drift with machine load.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
# The actix modes first, into a binary of their own (see the `actix` feature), then the rest.
cargo build --release -q -p aisoule-webhooks-comparisons --bin pipeline_instructions --features actix
cp target/release/pipeline_instructions target/release/pipeline_instructions-actix
cargo build --release -q -p aisoule-webhooks-comparisons --bin pipeline_instructions
bin=target/release/pipeline_instructions
small=${SMALL:-200}
large=${LARGE:-2200}
instructions() {
    local run=$bin
    [[ $1 == actix* ]] && run=$bin-actix
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$run" "$1" "$2" 2>&1 |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
declare -A per
# measure UNIT MODE...: each mode's instructions per delivery (or per body), the difference
# between the two counts divided by the runs between them.
measure() {
    local unit=$1 mode a b
    shift
    for mode in "$@"; do
        a=$(instructions "$mode" "$small")
        b=$(instructions "$mode" "$large")
        per[$mode]=$(( (b - a) / (large - small) ))
        echo "$mode: ${per[$mode]} instructions per $unit"
    done
}
measure delivery bare layer
echo "the layer adds: $(( per[layer] - per[bare] )) instructions per delivery"
measure "delivery (a tracing fmt subscriber at INFO)" bare-fmt layer-fmt
echo "under a fmt subscriber at INFO the layer adds: $(( per[layer-fmt] - per[bare-fmt] )) instructions per delivery"
measure delivery actix-bare actix
echo "the actix-web middleware adds: $(( per[actix] - per[actix-bare] )) instructions per delivery"
measure body parse payload derive
# Heap allocations per delivery (dhat), through the same pipeline; not under valgrind.
cargo build --release -q -p aisoule-webhooks-comparisons --bin pipeline_allocations
target/release/pipeline_allocations "$large"
awk -v p="${per[parse]}" -v q="${per[payload]}" -v d="${per[derive]}" 'BEGIN {
    printf "Event::parse / derived struct: %.2fx; with the typed payload: %.2fx\n", p / d, q / d }'
