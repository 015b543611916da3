#!/usr/bin/env bash
# make sanitize: the whole suite under ThreadSanitizer, then under AddressSanitizer (with
# LeakSanitizer), each in a build folder of its own (.build-tsan, .build-asan). Exits non-zero
# on any report or failed test. SANITIZERS="thread" runs one.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
for sanitizer in ${SANITIZERS:-thread address}; do
    scratch=".build-${sanitizer:0:1}san"
    log="$scratch/suite.log"
    swift build --build-tests --sanitize="$sanitizer" --scratch-path "$scratch"
    export LSAN_OPTIONS="suppressions=$PWD/Tests/Fuzz/lsan.supp"
    if FEDCOORD_SANITIZER="$sanitizer" TSAN_OPTIONS="halt_on_error=0" swift test --skip-build --sanitize="$sanitizer" --scratch-path "$scratch" \
        --parallel --num-workers 2 > "$log" 2>&1 && ! grep -q "Sanitizer" "$log"; then
        echo "sanitize $sanitizer: $(grep -E 'Test run with' "$log" | tail -1), no report"
    else
        status=1
        echo "sanitize $sanitizer: $(grep -cE 'WARNING: ThreadSanitizer|ERROR: (Address|Leak)Sanitizer' "$log") reports, $(grep -E 'Test run with' "$log" | tail -1) (see $log)"
    fi
done
exit $status
