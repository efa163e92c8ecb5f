#!/usr/bin/python3
"""Plot the round-trip latency distributions that pyproc-bench measured.

    /usr/bin/python3 bench/plot.py SAMPLES.csv RESULTS.csv OUT.png [TABLE.txt]

SAMPLES.csv holds raw round trips (key,us); RESULTS.csv gives each key its
median; the first line of TABLE.txt (machine and date) becomes a subtitle.
One cumulative distribution per transport on a log time axis, so that a
microsecond and a millisecond both stay readable.  Needs
Debian's python3-matplotlib.
"""

import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
from matplotlib.ticker import FuncFormatter  # noqa: E402

# key, legend name, colour, line width: pyproc first and bold.
SERIES = [
    ("sync", "pyproc, sync no-op", "#d62728", 2.6),
    ("async", "pyproc, async no-op", "#ff7f0e", 2.6),
    ("shm", "C floor: shared-memory spin ping-pong", "#7f7f7f", 1.4),
    ("pipe", "C floor: pipe ping-pong", "#000000", 1.4),
    ("mp-apply", "multiprocessing.Pool apply()", "#2ca02c", 1.6),
    ("ppe-lat", "ProcessPoolExecutor submit().result()", "#1f77b4", 1.6),
    ("popproc-lat", "pop proc transport (socket per call)", "#9467bd", 1.6),
]


def read_samples(path):
    samples = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            samples.setdefault(row["key"], []).append(float(row["us"]))
    return samples


def read_medians(path):
    with open(path, newline="") as f:
        return {row["key"]: row for row in csv.DictReader(f)}


def subtitle(path):
    with open(path) as f:
        return f.readline().strip()


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__.strip().split("\n\n")[1])
    samples = read_samples(sys.argv[1])
    results = read_medians(sys.argv[2])
    fig, ax = plt.subplots(figsize=(10, 6.4), dpi=110)
    for key, name, colour, width in SERIES:
        values = sorted(samples.get(key, []))
        if not values:
            continue
        n = len(values)
        median = (float(results[key]["median"]) if key in results
                  else values[n // 2])
        ax.step(values, [(i + 1) / n for i in range(n)], where="post",
                color=colour, linewidth=width,
                label=f"{name}: median {median:.3g} µs")
        ax.plot([median], [0.5], "o", color=colour, markersize=5)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.set_ylim(0, 1.0)
    ax.set_xlabel("round trip of one call, µs (log scale)")
    ax.set_ylabel("fraction of calls at most this long")
    ax.set_title("Round-trip latency, one call at a time (left is faster)")
    if len(sys.argv) == 5:
        fig.suptitle(subtitle(sys.argv[4]), fontsize=8, y=0.995,
                     color="#555555")
    ax.grid(True, which="major", alpha=0.4)
    ax.grid(True, which="minor", axis="x", alpha=0.15)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2,
              fontsize=9, frameon=False)
    fig.tight_layout()
    fig.savefig(sys.argv[3])


if __name__ == "__main__":
    main()
