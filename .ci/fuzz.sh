#!/usr/bin/env bash
# Builds fedfuzz with libFuzzer and AddressSanitizer, then fuzzes every target for
# FUZZ_SECONDS each (default 60), starting from the committed seeds in Tests/Fuzz/corpus.
# New inputs and any crash go to .build-fuzz/work/. Exits non-zero on a crash, a leak or a hang.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-60}"
targets="${FUZZ_TARGETS:-frame envelope tensor safetensors csv config roundlog}"
swift build -c release --product fedfuzz --scratch-path .build-fuzz \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFEDFUZZ_LIBFUZZER -Xcc -fsanitize=fuzzer-no-link,address
export LSAN_OPTIONS="suppressions=$PWD/Tests/Fuzz/lsan.supp"
status=0
for target in $targets; do
    work=".build-fuzz/work/$target"
    mkdir -p "$work"
    log=".build-fuzz/work/$target.log"
    if FEDFUZZ_TARGET="$target" .build-fuzz/release/fedfuzz "$work" "Tests/Fuzz/corpus/$target" \
        -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$work-" > "$log" 2>&1; then
        echo "fuzz $target: ${seconds} s, $(grep -E '^#[0-9]+.*DONE' "$log" | tail -1 | awk '{print $1" runs, "$3" "$4" "$5" "$6}'), no finding"
    else
        status=1
        echo "fuzz $target: FINDING (see $log and $work-*)"
        grep -E 'ERROR|SUMMARY' "$log" | head -5
    fi
done
exit $status
