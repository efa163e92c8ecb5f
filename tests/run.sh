#!/bin/sh
# Run each test binary under a timeout; a hang counts as a failure.
# Usage: tests/run.sh SECONDS TEST...
limit=$1
shift
failed=""
for t in "$@"; do
    echo "== $t"
    if ! timeout -k 5 "$limit" "$t"; then
        failed="$failed $t"
    fi
done
if [ -n "$failed" ]; then
    echo "FAILED:$failed"
    exit 1
fi
echo "all $# test programs passed"
