"""A per-query table (as ``evaluate --report`` writes queries_<features>.csv) from the log of an
hloc-style reference pipeline, so that ``evaluate --compare-with NAME=CSV`` compares with it query by
query (docs/evaluation.md).

The log is what ``baseline_sift.py`` in the shared data tools prints: one row per query image,
``q kp top-k... 2D3D inliers dt dR``, in stamp order over the query bag's posed images (inf where it
found no pose). Rows are named here by those images' stamps, as the localizer names bag images:

    python ../shared/tools/baseline_sift.py ../shared/data/bags/SET > SET.log
    python tools/baseline_table.py SET.log ../shared/data/bags/SET/query --output SET_hloc.csv
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lift_localizer.bags.reader import read_frames


def query_rows(log: str) -> list[tuple[float, float]]:
    """(dt, dR) of each query row, in order: the rows between the table's header and its summary."""
    rows, inside = [], False
    for line in log.splitlines():
        words = line.split()
        if words[:2] == ["q", "kp"]:
            inside = True
        elif inside and words and words[0].isdigit() and len(words) >= 5:
            if int(words[0]) != len(rows):
                raise ValueError(f"query row {words[0]} out of order (expected {len(rows)})")
            rows.append((float(words[-2]), float(words[-1])))
        elif inside and words and words[0] == "summary":
            break
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log", type=Path, help="the reference pipeline's output")
    ap.add_argument("query_bag", type=Path, help="the query bag it localized")
    ap.add_argument("--output", required=True, type=Path, help="CSV to write")
    a = ap.parse_args()
    rows = query_rows(a.log.read_text())
    names = [f.name for f in sorted(read_frames(a.query_bag, pose_topic="/ground_truth/pose"),
                                    key=lambda f: f.stamp_ns) if f.T_map_camera is not None]
    if len(rows) != len(names):
        print(f"error: the log has {len(rows)} query rows, the bag {len(names)} posed images", file=sys.stderr)
        return 2
    cells = [f"{name},{'' if dt == float('inf') else dt},{'' if dr == float('inf') else dr}"
             for name, (dt, dr) in zip(names, rows)]
    a.output.write_text("name,translation_error_m,rotation_error_deg\n" + "\n".join(cells) + "\n")
    print(f"{len(rows)} queries -> {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
