#!/bin/sh
# The command-line tool, end to end: argument typing, JSON and --pretty
# output, streams, pub, and the exit status of each way a call can fail.
# Usage: tests/cli.sh BUILD_DIR
set -u
b=$1
cli="$(pwd)/$b/bin/pyproc"
export PYPROC_WORKER="$(pwd)/$b/bin/pyproc-worker"
run="$cli call -p tests/py -s t=e2e"
failed=0

# expect WHAT STATUS OUTPUT COMMAND...: stdout must be OUTPUT exactly.
expect() {
    what=$1 want_status=$2 want=$3
    shift 3
    got=$("$@" 2>/tmp/pyproc-cli-err.$$)
    status=$?
    if [ "$status" != "$want_status" ] || [ "$got" != "$want" ]; then
        echo "FAIL: $what: status $status (want $want_status), output:"
        echo "$got"
        echo "want:"
        echo "$want"
        sed 's/^/  stderr: /' /tmp/pyproc-cli-err.$$
        failed=1
    else
        echo "ok: $what"
    fi
}

# stderr_has WHAT TEXT: the last command's stderr holds TEXT.
stderr_has() {
    if grep -qF -- "$2" /tmp/pyproc-cli-err.$$; then
        echo "ok: $1"
    else
        echo "FAIL: $1: stderr lacks '$2':"
        cat /tmp/pyproc-cli-err.$$
        failed=1
    fi
}

expect "version" 0 "pyproc $(sed -n 's/^#define PYPROC_VERSION_[A-Z]* \([0-9]*\)/\1/p' include/pyproc.h | paste -sd.)" \
    "$cli" version
expect "positional and keyword arguments" 0 '[[2,3],{"factor":1.5}]' \
    $run t.basic.echo "ii|sd" 2 3 factor 1.5
expect "every code" 0 '[null,true,-7,9007199254740993,"18446744073709551615",0.25,"s","eQ==",[1,{"k":"v"}],[1,2]]' \
    $run t.basic.echo "nbiIudsy[i{ss}]m" true -7 9007199254740993 18446744073709551615 0.25 s y 1 k v 920102
expect "types as Python sees them" 0 '["NoneType","bool","int","float","str","bytes","list","dict"]' \
    $run t.basic.types_of "nbid sy[]{}" 1 2 3.5 s y
expect "negative numbers after the reference are values" 0 '[-1,-2.5]' \
    $run t.basic.echo id -1 -2.5
expect "values JSON lacks" 0 '["nan","inf","18446744073709551615",-9223372036854775808,"AP8=",{"1":"one","null":2}]' \
    $run t.cli.odd_values
expect "bytes as hex" 0 '["nan","inf","18446744073709551615",-9223372036854775808,"00ff",{"1":"one","null":2}]' \
    $run -x t.cli.odd_values
expect "--pretty" 0 "['it\\'s', 'tab\\there', b'a\\'b\\\\', 1.0, 0.1, True, None]" \
    $run --pretty t.cli.quoted
expect "a shared buffer prints as its bytes" 0 '"WlpaWg=="' \
    $run t.buffers.make ii 4 90
expect "a shared buffer prints as its bytes, --pretty" 0 "b'ZZZZ'" \
    $run --pretty t.buffers.make ii 4 90
expect "gen prints each item" 0 "$(printf '0\n1\n2')" \
    "$cli" gen -p tests/py -s t=e2e t.cli.ticks i 3
expect "pub prints one answer per worker, in index order" 0 "$(printf '[0,"w"]\n[1,"w"]')" \
    "$cli" pub -w 2 -p tests/py -s t=e2e t.cli.index_and s w

expect "Python raised: status 1" 1 "" $run t.basic.fail s boom
stderr_has "the traceback is printed" "Traceback (most recent call last)"
stderr_has "the exception is printed" "boom"
expect "worker died: status 3" 3 "" $run t.cli.die
expect "unknown reference: status 4" 4 "" $run t.basic.nothing_here
expect "too few arguments: status 2" 2 "" $run t.basic.echo ii 1
stderr_has "too few arguments say so" "too few arguments"
expect "too many arguments: status 2" 2 "" $run t.basic.echo i 1 2
expect "a bad integer: status 2" 2 "" $run t.basic.echo i x
stderr_has "a bad integer is named" "'x' is not an integer"
expect "a bad format: status 2" 2 "" $run t.basic.echo "[i" 1
expect "a keyword without a name: status 2" 2 "" $run t.basic.echo "|i" 1
expect "no reference: status 2" 2 "" "$cli" call
expect "a timeout: status 5" 5 "" $run -t 200 t.cli.slow d 5
expect "a sub that does not load: status 1" 1 "" "$cli" call -p tests/py -s t=no_such_package t.x.y

# pyproc.pyi declares what the worker's module really has.
kinds=$($run t.cli.module_names)
if /usr/bin/python3 tests/stub_check.py embed/python/pyproc.pyi "$kinds"; then
    echo "ok: pyproc.pyi matches the worker's module"
else
    echo "FAIL: pyproc.pyi does not match the worker's module"
    failed=1
fi

rm -f /tmp/pyproc-cli-err.$$
[ $failed = 0 ] && echo "command-line tool: all passed"
exit $failed
