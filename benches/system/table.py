"""Prints the fio results of compare.sh as a Markdown table with ratios.

Usage: table.py RESULTS_DIR STACK...
Reads RESULTS_DIR/STACK.PASS.json for every pass (or RESULTS_DIR/STACK.json)
and prints the mean over the passes, then each pass's values when there are
several. IOPS for the 4 KiB rows, MB/s for the 1 MiB rows.
"""
import glob
import json
import os
import sys

# Lamina's goal: at least this share of the FUSE ceiling on every row.
BAR = 0.70

ROWS = [
    ("randread-4k-qd1", "4K random read QD1", "read", "iops"),
    ("randread-4k-qd32", "4K random read QD32", "read", "iops"),
    ("randwrite-4k-qd32", "4K random write QD32", "write", "iops"),
    ("randwrite-4k-qd1-fsync", "4K random write QD1 + fsync", "write", "iops"),
    ("seqread-1m-qd8", "1M sequential read (MB/s)", "read", "bw"),
    ("seqwrite-1m-qd8", "1M sequential write (MB/s)", "write", "bw"),
]


def load_file(path):
    """Returns {job name: IOPS or MB/s} of one fio JSON output."""
    with open(path) as f:
        jobs = json.load(f)["jobs"]
    values = {}
    for job in jobs:
        for name, _, side, unit in ROWS:
            if job["jobname"] == name:
                data = job[side]
                values[name] = data["iops"] if unit == "iops" else data["bw_bytes"] / 1e6
    return values


def pass_number(path):
    return int(path.rsplit(".", 2)[-2])


def load(results, stack):
    """Returns one {job name: value} per pass of `stack`, in pass order."""
    paths = sorted(glob.glob(os.path.join(results, stack + ".[0-9]*.json")), key=pass_number)
    if not paths:
        paths = [os.path.join(results, stack + ".json")]
    return [load_file(p) for p in paths]


def mean(values):
    return sum(values) / len(values) if values else None


def print_table(header, rows):
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for cells in rows:
        print("| " + " | ".join(cells) + " |")


def main():
    results, stacks = sys.argv[1], sys.argv[2:]
    passes = {s: load(results, s) for s in stacks}
    table = {
        s: {name: mean([p[name] for p in passes[s] if name in p]) for name, _, _, _ in ROWS}
        for s in stacks
    }
    ratio_cols = [s for s in stacks if s != "lamina"] if "lamina" in stacks else []

    rows = []
    for name, label, _, _ in ROWS:
        cells = [label]
        for s in stacks:
            v = table[s][name]
            cells.append("-" if v is None else f"{v:,.0f}")
        for s in ratio_cols:
            a, b = table["lamina"][name], table[s][name]
            cells.append("-" if not a or not b else f"{a / b:.2f}")
        rows.append(cells)
    print_table(["row"] + stacks + ["lamina/" + s for s in ratio_cols], rows)

    if any(len(p) > 1 for p in passes.values()):
        print()
        print("Each pass (pass 1 / pass 2 / ...):")
        print()
        rows = []
        for name, label, _, _ in ROWS:
            cells = [label]
            for s in stacks:
                cells.append(" / ".join(f"{p[name]:,.0f}" if name in p else "-" for p in passes[s]))
            rows.append(cells)
        print_table(["row"] + stacks, rows)

    if "lamina" in stacks and "ceiling" in stacks:
        below = []
        for name, label, _, _ in ROWS:
            a, b = table["lamina"][name], table["ceiling"][name]
            if a and b and a / b < BAR:
                below.append(f"{label} ({a / b:.2f})")
        print()
        print(f"Rows below {BAR:.0%} of the FUSE ceiling: " + (", ".join(below) or "none"))


if __name__ == "__main__":
    main()
