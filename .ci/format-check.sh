#!/bin/sh
# Report every line that .clang-format would change, and how many; fail
# when there is any.  Usage: .ci/format-check.sh CLANG_FORMAT FILE...
cf=$1
shift
total=0
for f in "$@"; do
    n=$("$cf" --style=file "$f" | diff -U0 "$f" - | tee /dev/stderr | grep -c '^-[^-]')
    total=$((total + n))
done
if [ "$total" -ne 0 ]; then
    echo "format-check: clang-format would change $total lines in $# files (see the diff above)"
    exit 1
fi
echo "format-check: $# files read as .clang-format says"
