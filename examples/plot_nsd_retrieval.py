"""
Image retrieval from simulated NSD with a ridge decoder
=======================================================

Simulate the Natural Scenes Dataset in its real on-disk layout, load it with the real loader
(:func:`neurodecode.datasets.load_nsd`), fit a closed-form ridge decoder
(:class:`neurodecode.models.RidgeDecoder`) from voxels to image embeddings, and score image retrieval
on the held-out shared images with bootstrap confidence intervals
(:func:`neurodecode.tasks.evaluate_retrieval`).
"""

# %%
# Simulate and load a dataset
# ---------------------------
# Everything is written into a temporary folder. ``NEURODECODE_DOCS_LIGHT=1`` (used by the
# documentation build in CI) shrinks the simulation.
import os
import tempfile

import matplotlib.pyplot as plt
import numpy as np

import neurodecode as nd
from neurodecode.datasets import load_nsd, simulate

LIGHT = os.environ.get("NEURODECODE_DOCS_LIGHT", "0") == "1"
tmp = tempfile.TemporaryDirectory()
root = simulate("nsd", os.path.join(tmp.name, "nsd"), n_subjects=1,
                n_sessions=2 if LIGHT else 4, trials_per_session=200 if LIGHT else 400,
                shared_fraction=0.2, image_size=32, grid=(16, 19, 16), verbose="warning")
trials = load_nsd(root, subject=1, verbose="warning")
print(trials)
print(trials.events[["subject", "session", "stimulus_id", "repetition", "split"]].head())

# %%
# Targets: image embeddings
# -------------------------
# The decoder predicts an embedding of the seen image. ``"pixels"`` embeddings (contrast-normalised
# colour thumbnails) need no weights; with real data you would use CLIP
# (:class:`neurodecode.embeddings.ClipEncoder`).
targets = nd.embeddings.embed_images(trials.stimuli, encoder="pixels", verbose="warning")
print(targets)

# %%
# Fit on training trials, test on the shared images
# -------------------------------------------------
# Test repetitions are averaged (NSD's protocol). Fitting on test trials would raise
# :class:`neurodecode.datasets.DataLeakageError`.
train = trials.select(split="train")
test = trials.select(split="test").average_repetitions()
ridge = nd.models.RidgeDecoder(alphas=np.logspace(0, 6, 9)).fit_trials(train, targets, verbose="warning")
print(f"alpha chosen on the training trials: {ridge.subject_models_[1].alpha_:.3g}")

pred = ridge.predict_trials(test)
true = targets.lookup(test.events["stimulus_id"])
scores = nd.tasks.evaluate_retrieval(pred, true, n_candidates=min(50, len(test)), topk=(1, 5),
                                     n_boot=200, random_state=0, verbose="warning")
print(scores)

# %%
# Top-k accuracy with confidence bands
# ------------------------------------
fig = nd.reports.plot_topk_curve(scores)

# %%
# What the decoder retrieves
# --------------------------
# Each row: the seen image, then the test images whose embeddings are most similar to the decoded one.
ids = np.asarray(test.events["stimulus_id"])
sim = (pred / np.linalg.norm(pred, axis=1, keepdims=True)) @ (true / np.linalg.norm(true, axis=1,
                                                                                     keepdims=True)).T
n_rows, n_best = 4, 4
fig, axes = plt.subplots(n_rows, n_best + 1, figsize=(1.6 * (n_best + 1), 1.6 * n_rows))
for r in range(n_rows):
    best = np.argsort(-sim[r])[:n_best]
    images = trials.stimuli.get_images([ids[r], *ids[best]])
    for c, image in enumerate(images):
        ax = axes[r, c]
        ax.imshow(image)
        ax.set_xticks([]), ax.set_yticks([])
        if c > 0 and best[c - 1] == r:
            for side in ax.spines.values():
                side.set_color("tab:green"), side.set_linewidth(3)
    axes[r, 0].set_ylabel(f"trial {r}")
axes[0, 0].set_title("seen")
for c in range(1, n_best + 1):
    axes[0, c].set_title(f"#{c}")
fig.suptitle("retrieved test images (green: the seen one)")
fig.tight_layout()

tmp.cleanup()
