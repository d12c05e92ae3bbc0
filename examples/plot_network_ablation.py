"""
Which brain network carries the information? Network ablation
=============================================================

Plant stimulus information in one cortical network of the simulator's whole-cortex 7-network atlas
(here *Default*), decode from the whole brain, then lesion each network in turn
(:func:`neurodecode.analysis.ablate`): the drop in retrieval is compared with the drops caused by
random contiguous regions of the same size, giving a p-value per network, corrected for the number of
networks (Benjamini–Hochberg FDR).
"""

# %%
import os
import tempfile

import neurodecode as nd
from neurodecode.analysis import ablate, load_atlas
from neurodecode.datasets import load_nsd, simulate
from neurodecode.reports.ablation import plot_ablation_bars

LIGHT = os.environ.get("NEURODECODE_DOCS_LIGHT", "0") == "1"
tmp = tempfile.TemporaryDirectory()
root = simulate("nsd", os.path.join(tmp.name, "nsd"), n_subjects=1, n_sessions=2 if LIGHT else 4,
                trials_per_session=200 if LIGHT else 300, shared_fraction=0.2, image_size=32,
                grid=(20, 24, 20), signal_rois=["Default"], verbose="warning")
# roi=None: every brain voxel, not only the visual cortex of ``nsdgeneral``
trials = load_nsd(root, subject=1, roi=None, verbose="warning")
train = trials.select(split="train")
test = trials.select(split="test").average_repetitions()
print(trials)

# %%
# Decoder and atlas
# -----------------
targets = nd.embeddings.embed_images(trials.stimuli, encoder="pixels", verbose="warning")
ridge = nd.models.RidgeDecoder().fit_trials(train, targets, verbose="warning")
atlas = load_atlas(root / "simulation" / "atlases" / "subj01_networks7.nii.gz")  # + its .tsv labels
print(atlas)

# %%
# Lesion every network
# --------------------
# ``zero`` sets the network's voxels to 0 in the test trials and keeps the trained decoder; the
# metric is 2-way identification (chance 0.5). With ``n_null`` null regions the smallest possible p-value is ``1 / (n_null + 1)``.
result = ablate(ridge, train, test, targets, atlas, strategies=("zero",), metrics=("2way",),
                n_null=49 if LIGHT else 199, n_boot=200, random_state=0, verbose="warning")
columns = ["region", "n_features", "baseline", "effect", "effect_ci_low", "effect_ci_high", "p_value",
           "p_fdr", "rank"]
print(result.to_frame()[columns].sort_values("rank").to_string(index=False, float_format="%.3f"))

# %%
fig = plot_ablation_bars(result.frame, strategy="zero")

# %%
# The planted network (*Default*) comes first. The larger the simulation (drop
# ``NEURODECODE_DOCS_LIGHT``) and the more null regions, the smaller its p-value can be; the sweep in
# :doc:`../ablation` measures how often the planted network is found.
result.save(os.path.join(tmp.name, "ablation"))  # ablation.csv + ablation.json
tmp.cleanup()
