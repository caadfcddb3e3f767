# SPDX-License-Identifier: Apache-2.0
"""Recall@100 vs queries per second of the batch ANN search, drawn from a retrieval results file.

`python -m recops.bench.plot bench/results/<date>-<machine>-retrieval.md [out.png]` reads the "ANN search" rows
(recall in each impl's label, time per batch call in the table, the batch size from the shape column) and writes
a PNG next to the results file. Needs matplotlib (bench-only)."""

import re
import sys
from pathlib import Path

_ROW = re.compile(r"^\| ANN search k=\d+ \| Q=(\d+),[^|]*?(?:; recops = ([^|]*?))? \| ([^|]*) \| ([\d.]+) \|")
_RECALL = re.compile(r"R@100 ([\d.]+)")


def points(md_text):
    """[(family, label, recall@100, queries per second)] of the batch ANN rows."""
    out = []
    for line in md_text.splitlines():
        m = _ROW.match(line)
        if not m:
            continue
        nq, recops_label, impl, ms = int(m.group(1)), m.group(2) or "", m.group(3).strip(), float(m.group(4))
        label = recops_label if impl == "recops" else impl
        r = _RECALL.search(label)
        recall = float(r.group(1)) if r else 1.0 if label.startswith("ExactIndex") else None
        if recall is None:
            continue
        q = nq
        if "first" in label:  # ExactIndex runs on a subset: "[first 1000 queries only]"
            q = int(re.search(r"first (\d+)", label).group(1))
        family = ("recops IVFIndex" if "IVFIndex" in label else "faiss fast-scan" if "fsr" in label else
                  "faiss IVF-Flat" if "IVF1024,Flat" in label else "hnswlib / HNSWIndex (first 200k items)"
                  if "hnsw" in label.lower() else label.split(" [")[0])
        out.append((family, label.split(" [")[0], recall, q / (ms / 1000.0)))
    return out


def plot(md_path, png_path=None):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    md_path = Path(md_path)
    png_path = Path(png_path) if png_path else md_path.with_suffix(".png")
    pts = points(md_path.read_text())
    if not pts:
        raise ValueError(f"plot: no 'ANN search' rows with recall labels in {md_path}")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for family in dict.fromkeys(p[0] for p in pts):
        fam = sorted((p for p in pts if p[0] == family), key=lambda p: p[2])
        ax.plot([p[2] for p in fam], [p[3] for p in fam], "o-", label=family)
    ax.set_xlabel("recall@100")
    ax.set_ylabel("queries per second (batch, all threads)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(md_path.stem)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    return png_path


if __name__ == "__main__":
    print(plot(*sys.argv[1:3]))
