#!/usr/bin/env bash
# Fuzz every cargo-fuzz target for a fixed budget; fail on any crash.
#
#   fuzz/run.sh [seconds-per-target]     (default 15: about a minute for the four targets)
#
# Runs on stable Rust (no sanitizer; libFuzzer's coverage guidance, debug assertions and
# overflow checks stay on). Each target starts from the committed seeds (fuzz/seeds/<target>)
# plus what earlier runs found (fuzz/corpus/<target>, git-ignored), with the token dictionary
# fuzz/dicts/<target>.dict when there is one. A crash leaves its input in
# fuzz/artifacts/<target>/; reproduce with
#   cargo fuzz run --sanitizer none <target> fuzz/artifacts/<target>/<file>
# then turn it into a unit test next to the code and fix the code.
set -euo pipefail
cd "$(dirname "$0")/.."

budget="${1:-15}"
if ! [[ "$budget" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: fuzz/run.sh [seconds-per-target]" >&2
    exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

echo "== building the fuzz targets"
cargo fuzz build --sanitizer none

failed=()
for target in $(cargo fuzz list); do
    mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
    log="fuzz/$target.log"
    options=(-max_total_time="$budget" -timeout=10 -rss_limit_mb=1024)
    if [[ -f "fuzz/dicts/$target.dict" ]]; then
        options+=(-dict="fuzz/dicts/$target.dict")
    fi
    echo "== fuzzing $target for ${budget}s"
    if cargo fuzz run --sanitizer none "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" \
        -- "${options[@]}" >"$log" 2>&1; then
        grep -E '^#[0-9]+.*DONE' "$log" | tail -1 || true
    else
        failed+=("$target")
        echo "!! $target failed; the end of $log:"
        tail -40 "$log"
    fi
done

if ((${#failed[@]})); then
    echo "== fuzzing found crashes in: ${failed[*]} (inputs in fuzz/artifacts/)"
    exit 1
fi
echo "== fuzzing ok"
