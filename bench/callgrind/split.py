#!/usr/bin/env python3
"""Split a callgrind profile of callcost by part of the host, per call.

    split.py PROFILE CALLS

Self costs (instructions, Ir) of every function, summed by the part of a
call it belongs to and divided by CALLS.  Only the host thread's profile
is meant (callgrind --separate-threads=yes, file ending in -01).
"""
import re
import subprocess
import sys

# (part, test on "file:function"), first match wins.
PARTS = [
    ("malloc/free", lambda f: "/malloc/" in f or "malloc.c" in f or "arena.c" in f
     or "freelist.c" in f),
    ("locking", lambda f: "pthread_mutex" in f or "lowlevellock" in f or "lock.h" in f
     or "/lock.c" in f),
    ("format/encode", lambda f: "/fmt.c" in f or "msgpuck.h:pyproc__fmt" in f
     or "pyproc__encode_call" in f or "/buf.c" in f or "strlen" in f or "strcmp" in f),
    ("calls table", lambda f: "/table.c" in f),
    ("ring write/send", lambda f: "/send.c" in f or re.search(
        r"ring\.c:(shm_ring_(reserve|commit|notify|is_closed)|ring_fits)", f) is not None),
    ("drain/deliver", lambda f: "/drain.c" in f or "/deliver.c" in f or "/mpvalid.c" in f
     or re.search(r"ring\.c:(shm_ring_(read|done|copy_out)|ring_release)", f) is not None
     or re.search(r"worker\.c:pyproc__chan_(read|done|before|mark|copy_out)", f) is not None
     or "msg.c:pyproc__msg_from" in f or "msg.c:msg_" in f or "take_buffers" in f
     or "memcpy" in f or "memmove" in f),
    ("call end/free", lambda f: "/call.c" in f or "pyproc_call_free" in f
     or "pyproc_msg_free" in f or "/pool_cache" in f),
    # Waiting: how many times a spin looks depends on how soon the answer
    # comes, so it varies from run to run; the total is shown without it.
    ("wait/spin/poll", lambda f: "/wait.c" in f or "poll_" in f or "doorbell" in f
     or "chan_has_replies" in f or "shm_ring_empty" in f or "clock_gettime" in f
     or "futex" in f or "shm_now" in f or "spin" in f or "syscall" in f),
    ("start/pick", lambda f: "/start.c" in f or "/func.c" in f or "worker_ref" in f
     or "worker_unref" in f or "fork_gen" in f or "core.h" in f or "peer_asleep" in f),
]


def main():
    prof, calls = sys.argv[1], int(sys.argv[2])
    out = subprocess.run(["callgrind_annotate", "--inclusive=no", "--auto=no", "--threshold=100", prof],
                         capture_output=True, text=True, check=True).stdout
    sums, total, rest = {}, 0, []
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\([\s\d.]+%\)\s+(\S.*)$", line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        ir, fn = int(m.group(1).replace(",", "")), m.group(2)
        if "callcost.c" in fn:
            continue  # the driver's own loop
        total += ir
        part = next((p for p, test in PARTS if test(fn)), "other")
        sums[part] = sums.get(part, 0) + ir
        if part == "other":
            rest.append((ir, fn))
    for p, _ in PARTS + [("other", None)]:
        print(f"  {p:18s} {sums.get(p, 0) / calls:8.1f}")
    print(f"  {'total':18s} {total / calls:8.1f}")
    print(f"  {'total but waiting':18s} {(total - sums.get('wait/spin/poll', 0)) / calls:8.1f}")
    for ir, fn in sorted(rest, reverse=True)[:8]:
        print(f"    other: {ir / calls:7.1f} {fn[:100]}")


if __name__ == "__main__":
    main()
