#!/bin/sh
# The shared library exports exactly the functions marked PYPROC_EXPORT in
# include/pyproc.h, each bound to a version node of host/libpyproc.map,
# and nothing else.
# Usage: tests/abi.sh [path/to/libpyproc.so]   (default: build/lib/libpyproc.so)
set -e
lib=${1:-build/lib/libpyproc.so}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# What the header promises: the name before the "(" of each declaration.
tr '\n' ' ' < include/pyproc.h | grep -o 'PYPROC_EXPORT[^(;]*(' |
    sed -n 's/.*[ *]\(pyproc_[a-z0-9_]*\)($/\1/p' | sort -u > "$tmp/api"
# What the library defines, as nm sees it: name@@VERSION (or a bare name
# when unversioned); the version nodes themselves show as absolute symbols.
nm -D --defined-only "$lib" | awk '$2 != "A" { print $3 }' | sort > "$tmp/nm"
# The same through objdump, whose version column says which node holds it.
# Version nodes show as *ABS* symbols named after themselves.
objdump -T "$lib" | awk '/\*UND\*|\*ABS\*/ { next } / DF | DO / { print $NF, $(NF-1) }' |
    sort > "$tmp/objdump"

fail=0
sed 's/@@.*//' "$tmp/nm" > "$tmp/names"
if ! cmp -s "$tmp/api" "$tmp/names"; then
    echo "abi: exported functions differ from include/pyproc.h (< header, > library):"
    diff "$tmp/api" "$tmp/names" || true
    fail=1
fi
if grep -v '@@PYPROC_[0-9][0-9.]*$' "$tmp/nm"; then
    echo "abi: the symbols above carry no PYPROC_ version"
    fail=1
fi
if awk '$2 !~ /^PYPROC_[0-9.]+$/' "$tmp/objdump" | grep .; then
    echo "abi: objdump -T shows the symbols above outside a PYPROC_ node"
    fail=1
fi
if [ "$(wc -l < "$tmp/objdump")" -ne "$(wc -l < "$tmp/api")" ]; then
    echo "abi: objdump -T lists $(wc -l < "$tmp/objdump") defined symbols for" \
        "$(wc -l < "$tmp/api") functions"
    fail=1
fi
[ $fail -eq 0 ] && echo "abi: $(wc -l < "$tmp/api") functions, each versioned, nothing else exported"
exit $fail
