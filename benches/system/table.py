"""Prints the fio results of compare.sh as a Markdown table with ratios.

Usage: table.py RESULTS_DIR STACK...  (reads RESULTS_DIR/STACK.json)
IOPS for the 4 KiB rows, MB/s for the 1 MiB rows, as ../shared/bench reports.
"""
import json
import os
import sys

ROWS = [
    ("randread-4k-qd1", "4K random read QD1", "read", "iops"),
    ("randread-4k-qd32", "4K random read QD32", "read", "iops"),
    ("randwrite-4k-qd32", "4K random write QD32", "write", "iops"),
    ("randwrite-4k-qd1-fsync", "4K random write QD1 + fsync", "write", "iops"),
    ("seqread-1m-qd8", "1M sequential read (MB/s)", "read", "bw"),
    ("seqwrite-1m-qd8", "1M sequential write (MB/s)", "write", "bw"),
]


def load(results, stack):
    path = os.path.join(results, stack + ".json")
    with open(path) as f:
        jobs = json.load(f)["jobs"]
    values = {}
    for job in jobs:
        for name, _, side, unit in ROWS:
            if job["jobname"] == name:
                data = job[side]
                values[name] = data["iops"] if unit == "iops" else data["bw_bytes"] / 1e6
    return values


def main():
    results, stacks = sys.argv[1], sys.argv[2:]
    table = {s: load(results, s) for s in stacks}
    ratio_cols = [s for s in stacks if s != "lamina"] if "lamina" in stacks else []
    header = ["row"] + stacks + ["lamina/" + s for s in ratio_cols]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, label, _, _ in ROWS:
        cells = [label]
        for s in stacks:
            v = table[s].get(name)
            cells.append("-" if v is None else f"{v:,.0f}")
        for s in ratio_cols:
            a, b = table["lamina"].get(name), table[s].get(name)
            cells.append("-" if not a or not b else f"{a / b:.2f}")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
