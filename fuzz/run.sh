#!/bin/sh
# Run one libFuzzer target for a bounded time.
# Usage: fuzz/run.sh BUILD_DIR TARGET SECONDS
#
# The seeds in fuzz/corpus/TARGET are read but never written: what the
# fuzzer finds goes to BUILD_DIR/corpus/TARGET, and a crashing input to
# BUILD_DIR/TARGET-crash-*.  The full log is BUILD_DIR/TARGET.log.
set -u
dir=$1
target=$2
seconds=$3
work=$dir/corpus/$target
log=$dir/$target.log
mkdir -p "$work"

echo "== $dir/$target for ${seconds}s"
# CPython's process-lifetime allocations are not leaks of ours (see
# fuzz/lsan.supp); everything else LeakSanitizer finds fails the run.
LSAN_OPTIONS="suppressions=$(pwd)/fuzz/lsan.supp:print_suppressions=0" \
ASAN_OPTIONS="detect_leaks=1" \
UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
timeout -k 10 $((seconds + 120)) "$dir/$target" \
    -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -max_len=4096 \
    -print_final_stats=1 -artifact_prefix="$dir/$target-" \
    "$work" "fuzz/corpus/$target" > "$log" 2>&1
rc=$?
if [ $rc -ne 0 ]; then
    tail -n 60 "$log"
    echo "FAILED: $target (exit $rc); full log in $log"
    exit 1
fi
grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb' "$log" | tr '\n' ' '
echo
echo "$target: no failure; corpus $(ls "$work" | wc -l) inputs"
