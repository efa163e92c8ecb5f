#!/bin/sh
# Write a one-line link page DIR/FUNCTION.3 (".so man3/PAGE.3") for each
# pyproc_* name on the NAME line of each section-3 page given, so that
# `man FUNCTION` opens the page that documents it.  The NAME lines are the
# one list of what each page documents: a new function gets its link by
# being named there.  Link pages left from names since removed go first.
# Usage: man/links.sh DIR man/PAGE.3.scd...
set -e
dir=$1
shift
mkdir -p "$dir"
rm -f "$dir"/pyproc_*.3
for src in "$@"; do
    page=$(basename "$src" .scd)
    # The first non-empty line after "# NAME", up to " - ".
    names=$(awk '/^# NAME/ { on = 1; next } on && NF { sub(/ - .*/, ""); print; exit }' "$src")
    for name in $(echo "$names" | tr ',' ' '); do
        case $name in
        pyproc_*)
            if [ -e "$dir/$name.3" ]; then
                echo "man/links.sh: $name is named by two pages" >&2
                exit 1
            fi
            echo ".so man3/$page" > "$dir/$name.3"
            ;;
        esac
    done
done
