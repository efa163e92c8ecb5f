#!/bin/sh
# The man pages of build dir B (made by `make man` from man/*.scd):
#  - each renders through man and groff without a warning;
#  - each link page points at a page that exists, and names something
#    that include/pyproc.h declares;
#  - every function the shared library exports has a link page, and the
#    page it points at spells the function's prototype as the header does
#    (spaces aside), so a new function without its page fails here.
# The same for pools over MPI when they are built (libpyproc-mpi.so, its
# header include/pyproc-mpi.h, its link pages in man/mpi/man3).
# Usage: tests/man.sh [B]   (default: build)
set -e
b=${1:-build}
lib=$b/lib/libpyproc.so
mpilib=$b/lib/libpyproc-mpi.so
headers="include/pyproc.h include/pyproc-mpi.h"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
npages=0

for page in "$b"/man/man1/*.1 "$b"/man/man3/pyproc.3 "$b"/man/man3/pyproc-*.3; do
    npages=$((npages + 1))
    MANWIDTH=80 man -l --warnings -E UTF-8 "$page" > /dev/null 2> "$tmp/warn" || true
    groff -ww -z -t -man "$page" 2>> "$tmp/warn" || echo "groff failed" >> "$tmp/warn"
    if [ -s "$tmp/warn" ]; then
        echo "man: $page renders with warnings:"
        cat "$tmp/warn"
        fail=1
    fi
done

# The header's declarations on one line each, spaces squeezed.
cat $headers | tr '\n\t' '  ' | tr -s ' ' | grep -o 'PYPROC_EXPORT [^;]*;' |
    sed 's/^PYPROC_EXPORT //' > "$tmp/protos"

for link in "$b"/man/man3/pyproc_*.3 "$b"/man/mpi/man3/pyproc_*.3; do
    [ -e "$link" ] || continue # no MPI pages
    name=$(basename "$link" .3)
    target=$(sed -n 's|^\.so man3/\(.*\)$|\1|p' "$link")
    if [ ! -f "$b/man/man3/$target" ]; then
        echo "man: $link points at man3/$target, which is not there"
        fail=1
    fi
    if ! cat $headers | grep -q "\\b$name\\b"; then
        echo "man: $target names $name, which neither of $headers declares"
        fail=1
    fi
done

# What the library exports, as tests/abi.sh lists it.
nm -D --defined-only "$lib" | awk '$2 != "A" { sub(/@.*/, "", $3); print $3 }' | sort > "$tmp/exported"
[ -s "$tmp/exported" ] || { echo "man: $lib exports nothing"; exit 1; }
if [ -f "$mpilib" ]; then
    nm -D --defined-only "$mpilib" | awk '$2 != "A" { sub(/@.*/, "", $3); print $3 }' |
        sort -u - "$tmp/exported" > "$tmp/all"
    mv "$tmp/all" "$tmp/exported"
fi
while read -r fn; do
    link=$b/man/man3/$fn.3
    [ -f "$link" ] || link=$b/man/mpi/man3/$fn.3
    if [ ! -f "$link" ]; then
        echo "man: $fn has no page: name it on the NAME line of a man/pyproc-*.3.scd and document it there"
        fail=1
        continue
    fi
    src=man/$(sed -n 's|^\.so man3/\(.*\)$|\1|p' "$link").scd
    proto=$(grep -E "[ *]$fn\\(" "$tmp/protos" || true)
    if [ -z "$proto" ]; then
        echo "man: $fn is exported but no PYPROC_EXPORT prototype in $headers declares it"
        fail=1
    elif ! tr '\n\t' '  ' < "$src" | tr -s ' ' | grep -qF -- "$proto"; then
        echo "man: $src does not spell the prototype of $fn as its header does:"
        echo "    $proto"
        fail=1
    fi
done < "$tmp/exported"

[ $fail -eq 0 ] &&
    echo "man: $npages pages render without warnings; $(wc -l < "$tmp/exported") exported functions, each with its page and prototype"
exit $fail
