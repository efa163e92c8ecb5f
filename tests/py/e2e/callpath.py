"""The worker's call path: arguments with and without the hub, keywords,
results that go straight into the ring and those that do not."""

import enum
import threading

import _pyproc


def hub_args(hub, *args):
    return [hub.t is not None, list(args)]


def hub_kw(hub, a, b=0):
    return [hub.t is not None, a, b]


def plain_kw(a, b=0):
    return [a, b]


def a_name_longer_than_a_fixstr_holds(x):
    return x


def a_name_longer_than_the_reference_cache_holds_which_goes_through_the_dict_of_references_every_time_it_is_called_by_the_host(x):
    return x


def nine(a, b, c, d, e, f, g, h, i):
    return [a, b, c, d, e, f, g, h, i]


class Small(enum.IntEnum):
    SEVEN = 7


class Text(str):
    pass


VALUES = {
    "none": None,
    "true": True,
    "false": False,
    "zero": 0,
    "minus_one": -1,
    "int64_min": -2**63,
    "uint64_max": 2**64 - 1,
    "float": 1.5,
    "ascii": "ascii",
    "empty": "",
    "non_ascii": "d\u00e9j\u00e0",
    "long_ascii": "x" * 5000,
    "bytes": b"\x00\x01",
    "long_bytes": b"y" * 5000,
    "int_enum": Small.SEVEN,
    "str_subclass": Text("sub"),
    "too_big": 2**64,
}


def value(name):
    return VALUES[name]


_stop = threading.Event()
_thread = None


def alone():
    return _pyproc._alone()


def start_thread():
    global _thread
    _stop.clear()
    _thread = threading.Thread(target=_stop.wait)
    _thread.start()


def stop_thread():
    _stop.set()
    _thread.join()


def text_mapping():
    """[anonymous, huge_kb, advised] of the mapping that holds the
    program's first executable segment, as /proc/self/smaps shows it:
    advised when it asks for huge pages (VmFlags "hg"); huge_kb is what
    the kernel gave."""
    with open("/proc/self/smaps") as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5 and "x" in fields[1]:
            huge, advised = 0, False
            for extra in lines[i + 1:]:
                if extra.split()[0].count("-") == 1 and ":" not in extra.split()[0]:
                    break
                if extra.startswith("AnonHugePages:"):
                    huge = int(extra.split()[1])
                if extra.startswith("VmFlags:"):
                    advised = "hg" in extra.split()[1:]
            return [len(fields) < 6, huge, advised]
    return [False, 0, False]
