#!/usr/bin/env bash
# Builds every fuzz target, replays the committed corpus, then fuzzes each target for a
# bounded time. Any crash fails the script. Usage: fuzz/run.sh [seconds-per-target]
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
# cargo-fuzz needs nightly-only flags; the stable toolchain accepts them with this.
export RUSTC_BOOTSTRAP=1

targets=$(cargo fuzz list)
cargo fuzz build
for target in $targets; do
    # Replay: every committed input must still pass.
    cargo fuzz run "$target" "corpus/$target" -- -runs=0 > "target/replay-$target.log" 2>&1 \
        || { cat "target/replay-$target.log"; echo "replaying corpus/$target failed"; exit 1; }
    # Fuzz into a scratch folder, with the committed corpus as seeds, so the tree stays clean.
    scratch=$(mktemp -d)
    cargo fuzz run "$target" "$scratch" "corpus/$target" -- \
        -dict=json.dict -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
        > "target/fuzz-$target.log" 2>&1 \
        || { tail -n 60 "target/fuzz-$target.log"; echo "fuzzing $target found a crash"; exit 1; }
    runs=$(grep -oE 'Done [0-9]+ runs in [0-9]+ second' "target/fuzz-$target.log" | tail -n1)
    corpus=$(grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' "target/fuzz-$target.log" | tail -n1)
    echo "fuzz $target: $runs(s), $corpus (seeds: $(ls "corpus/$target" | wc -l))"
    rm -rf "$scratch"
done
