#!/usr/bin/env bash
# Runs cargo-mutants over the given files of .cargo/mutants.toml (all of them without
# arguments), one file at a time, each with the tests that cover it (README, "Contributing:
# mutation testing"). Mutates the tree in place and restores it: run it in a worktree of its
# own (`git worktree add ../mutants HEAD`), not where you edit. Each file's results go to
# target/mutants/<file>/mutants.out; a summary line per file is printed.
#
#   .cargo/mutants.sh                          # every file: hours
#   .cargo/mutants.sh src/dedup/memory.rs      # one file
set -euo pipefail
cd "$(dirname "$0")/.."
all=(
    src/verify.rs src/verify/diagnose.rs src/verify/sign.rs
    src/dedup.rs src/dedup/memory.rs src/dedup/redis.rs
    src/receiver/accounts.rs src/receiver/body.rs src/receiver/client.rs
    src/receiver/lifecycle.rs src/receiver/mod.rs src/receiver/rejection.rs
    src/receiver/telemetry.rs
    src/dispatch.rs
    src/inbox/mod.rs src/inbox/postgres.rs src/inbox/sqlite.rs src/inbox/store.rs
    src/inbox/worker.rs
)
receiver="axum:: actix:: receiver lifecycle promises:: adversarial:: internet:: proxies::"
inbox="inbox:: inbox_mutants:: inbox_metrics:: inbox_sqlite:: dispatch:: lifecycle:: receiver_mutants::"
# The tests that cover each file: `cargo test`'s filters, after `-- --`.
tests_for() {
    case "$1" in
        src/verify.rs) echo "verify:: promises:: adversarial::" ;;
        src/verify/diagnose.rs) echo "diagnose:: verify::" ;;
        src/verify/sign.rs) echo "verify:: promises:: adversarial:: diagnose::" ;;
        src/dedup.rs | src/dedup/memory.rs) echo "dedup:: dedup_mutants::" ;;
        src/dedup/redis.rs) echo "dedup:: readiness:: redis --skip example" ;;
        src/receiver/lifecycle.rs) echo "$receiver inbox:: --skip example" ;;
        src/receiver/mod.rs) echo "$receiver accounts:: stale:: diagnose:: metrics:: outcome:: inbox:: dispatch:: --skip example" ;;
        src/receiver/accounts.rs) echo "accounts::" ;;
        src/receiver/telemetry.rs) echo "$receiver metrics:: accounts:: dispatch:: --skip example" ;;
        src/receiver/*) echo "$receiver --skip example" ;;
        src/inbox/store.rs) echo "$inbox inbox_postgres:: --skip example" ;;
        src/inbox/sqlite.rs) echo "inbox_sqlite:: inbox:: inbox_crash:: inbox_metrics:: inbox_mutants::" ;;
        src/inbox/postgres.rs) echo "inbox_postgres::" ;;
        src/dispatch.rs) echo "dispatch::" ;;
        src/inbox/*) echo "$inbox --skip example" ;;
        *) echo "no tests are named for $1" >&2; return 1 ;;
    esac
}
files=("$@")
[ ${#files[@]} -gt 0 ] || files=("${all[@]}")
for file in "${files[@]}"; do
    filter=$(tests_for "$file")
    # -F picks the file's mutants by name; every other file is excluded by -e as well, since
    # cargo-mutants 27.1 lets other files' struct-field mutants through -F.
    excluded=()
    for other in "${all[@]}"; do [ "$other" != "$file" ] && excluded+=(-e "$other"); done
    name=${file#src/}; name=${name%.rs}; name=${name//\//_}
    mkdir -p "target/mutants/$name"
    # shellcheck disable=SC2086 # the filter is several words on purpose
    cargo mutants --in-place --no-shuffle -F "^${file//./\\.}:" "${excluded[@]}" \
        -C --test=it --timeout 120 --build-timeout 300 --baseline=skip \
        -o "target/mutants/$name" -- -- $filter > "target/mutants/$name.log" 2>&1 || true
    echo "$file: $(tail -n 1 "target/mutants/$name.log")"
done
