#!/usr/bin/env python3
"""Where a predicted camera path goes wrong: ATE after a Sim(3) fit, the error on the second half
of a fit to the first half only (drift), the orientation error relative to the first frame, the
direction error of each step and the ratio of predicted to true step lengths in each half (scale
drift: the ratio falls when the later steps come out short).

Usage: python3 scripts/pose_drift.py GT_TUM PRED_TUM [GT_TUM PRED_TUM ...]
Both files are TUM trajectories (timestamp tx ty tz qx qy qz qw, world_from_cam), e.g. a
`streamrecon synth` folder's groundtruth.txt and the trajectory.txt of `streamrecon run` on its
rgb/ folder. Needs numpy.
"""
import sys

import numpy as np


def load(path):
    rows = [[float(x) for x in line.split()] for line in open(path) if line.strip() and not line.startswith("#")]
    a = np.array(rows)
    if a.ndim != 2 or a.shape[1] != 8:
        sys.exit(f"{path}: expected TUM rows of 8 numbers (timestamp tx ty tz qx qy qz qw)")
    return a[:, 1:4], a[:, 4:8]


def rotation(q):
    x, y, z, w = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def sim3(src, dst):
    """s, R, t with dst ~ s R src + t (Umeyama)."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    u, d, vt = np.linalg.svd(b.T @ a / len(src))
    e = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[2, 2] = -1
    r = u @ e @ vt
    s = np.trace(np.diag(d) @ e) / (a ** 2).sum(1).mean()
    return s, r, md - s * r @ ms


def angle(r):
    return np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1)))


def main(args):
    if len(args) < 2 or len(args) % 2:
        sys.exit(__doc__)
    print("| predicted path | frames | ATE % of path | 2nd-half error of a 1st-half fit, % of path | orientation error mean / max (deg) "
          "| step direction error mean (deg) | step length ratio, 1st / 2nd half |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for gt_path, pred_path in zip(args[0::2], args[1::2]):
        pg, qg = load(gt_path)
        pp, qp = load(pred_path)
        if len(pg) != len(pp) or len(pg) < 4:
            sys.exit(f"{pred_path}: {len(pp)} poses against {len(pg)} in {gt_path} (need equal counts, at least 4)")
        length = np.linalg.norm(np.diff(pg, axis=0), axis=1).sum()
        s, r, t = sim3(pp, pg)
        aligned = (s * (r @ pp.T)).T + t
        ate = np.sqrt(((aligned - pg) ** 2).sum(1).mean())
        half = len(pg) // 2
        s1, r1, t1 = sim3(pp[:half], pg[:half])
        late = np.sqrt(((((s1 * (r1 @ pp.T)).T + t1)[half:] - pg[half:]) ** 2).sum(1).mean())
        # Orientation relative to the first frame; the camera axes may differ by a flip of y and z
        # (OpenCV against OpenGL), so take the convention that fits.
        orient = None
        for flip in (np.eye(3), np.diag([1.0, -1.0, -1.0])):
            e = [angle((flip @ (rotation(qp[0]).T @ rotation(a)) @ flip).T @ (rotation(qg[0]).T @ rotation(b))) for a, b in zip(qp, qg)]
            if orient is None or np.mean(e) < np.mean(orient):
                orient = e
        dp, dg = np.diff(aligned, axis=0), np.diff(pg, axis=0)
        cos = (dp * dg).sum(1) / np.maximum(np.linalg.norm(dp, axis=1) * np.linalg.norm(dg, axis=1), 1e-12)
        ratio = np.linalg.norm(dp, axis=1) / np.maximum(np.linalg.norm(dg, axis=1), 1e-12)
        print(f"| {pred_path} | {len(pg)} | {100 * ate / length:.1f} | {100 * late / length:.1f} | {np.mean(orient):.1f} / {np.max(orient):.1f} "
              f"| {np.degrees(np.arccos(np.clip(cos, -1, 1))).mean():.1f} | {ratio[:half].mean():.2f} / {ratio[half:].mean():.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
