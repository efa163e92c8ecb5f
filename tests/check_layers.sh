#!/bin/sh
# Every file of host/ is listed in host/floors.txt, and includes only
# headers of its own floor or a lower one.  Prints each violation.
cd "$(dirname "$0")/.." || exit 1
table=host/floors.txt
bad=0
floor_of() {
    awk -v f="$1" '$1 ~ /^[0-9]+$/ && $2 == f { print $1 }' "$table"
}
for path in host/*.c host/*.h; do
    f=${path#host/}
    mine=$(floor_of "$f")
    if [ -z "$mine" ]; then
        echo "$path: not in $table"
        bad=1
        continue
    fi
    for inc in $(sed -n 's/^#include "\([^"/]*\)"$/\1/p' "$path"); do
        [ "$inc" = pyproc.h ] && continue
        theirs=$(floor_of "$inc")
        if [ -z "$theirs" ]; then
            echo "$path: includes $inc, which is not in $table"
            bad=1
        elif [ "$theirs" -gt "$mine" ]; then
            echo "$path (floor $mine) includes $inc (floor $theirs)"
            bad=1
        fi
    done
done
[ $bad -eq 0 ] && echo "host/: every include goes down or sideways"
exit $bad
