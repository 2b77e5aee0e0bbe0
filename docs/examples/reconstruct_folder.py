"""Reconstructs a folder of images and plots each frame's depth next to the frame.

    .venv/bin/python3 docs/examples/reconstruct_folder.py IMAGES_FOLDER [depth.png]
"""
import sys

import matplotlib
matplotlib.use("Agg")  # write a file; no display needed
import matplotlib.pyplot as plt
import streamrecon

folder, picture = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "depth.png")
with streamrecon.Reconstructor(policy="xstream", kv_budget="256MiB") as rec:  # the shipped model
    results = [rec.push(frame) for frame in streamrecon.open_frames(folder, max_frames=6)]

fig, axes = plt.subplots(2, len(results), figsize=(3 * len(results), 4.5), squeeze=False)
for column, r in enumerate(results):
    axes[0][column].imshow(r.image)
    axes[0][column].set_title(r.name)
    axes[1][column].imshow(r.depth, cmap="turbo")
    axes[1][column].set_title(f"depth, {r.model_ms:.0f} ms")
for ax in axes.flat:
    ax.axis("off")
fig.savefig(picture, dpi=80, bbox_inches="tight")
streamrecon.write_tum(picture.rsplit(".", 1)[0] + "_trajectory.txt", results)  # the camera path, TUM format
print(f"{len(results)} frames: depth in {picture}, cameras in {picture.rsplit('.', 1)[0]}_trajectory.txt")
