#!/bin/sh
# Every program in examples/ (and the event-loop adapters in
# examples/loops/) runs, from examples/ as its comments say, and
# prints what tests/examples/NAME.out holds, once process ids and the
# checkout's path are made neutral.  An example whose output lines may come
# in any order (completions from two workers) is compared sorted.
# Usage: tests/examples.sh BUILD_DIR
set -u
b=$(cd "$1" && pwd)
repo=$(pwd)
export PYPROC_WORKER="$b/bin/pyproc-worker"
failed=""
unordered="eventloop"

for src in examples/*.c examples/loops/*.c; do
    name=${src#examples/}
    name=${name%.c}
    want="tests/examples/$name.out"
    if [ ! -f "$want" ]; then
        echo "FAIL: $name: no $want"
        failed="$failed $name"
        continue
    fi
    got=$(cd examples && timeout -k 5 120 "$b/examples/$name" 2>&1)
    status=$?
    got=$(printf '%s\n' "$got" | sed -E -e "s|$repo|REPO|g" -e 's/pid [0-9]+/pid N/g' -e 's/pyproc [0-9]+[.][0-9]+[.][0-9]+/pyproc X.Y.Z/')
    case " $unordered " in *" $name "*) got=$(printf '%s\n' "$got" | sort) ;; esac
    if [ $status -ne 0 ] || [ "$got" != "$(cat "$want")" ]; then
        echo "FAIL: $name (exit $status)"
        printf '%s\n' "$got" | diff -u "$want" - | head -40
        failed="$failed $name"
    else
        echo "ok: $name"
    fi
done
if [ -n "$failed" ]; then
    echo "FAILED examples:$failed"
    exit 1
fi
echo "every example ran and printed what it should"
