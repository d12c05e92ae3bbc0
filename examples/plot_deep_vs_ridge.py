"""
Deep multi-subject decoder vs ridge
===================================

Train MindEye2's kind of decoder — per-subject linear adapters feeding one shared residual MLP, with a
contrastive (InfoNCE) loss — on two simulated NSD subjects at once
(:class:`neurodecode.models.BrainDecoder` + :class:`neurodecode.training.Trainer`), and compare its
retrieval with one ridge decoder per subject, subject by subject, with bootstrap confidence intervals.
"""

# %%
import os
import tempfile

import numpy as np

import neurodecode as nd
from neurodecode.datasets import concatenate_trials, load_nsd, simulate

LIGHT = os.environ.get("NEURODECODE_DOCS_LIGHT", "0") == "1"
tmp = tempfile.TemporaryDirectory()
# ``snr=1.5``: stronger signal than the default 0.4, so that a deep network learns from this little data
root = simulate("nsd", os.path.join(tmp.name, "nsd"), n_subjects=2,
                n_sessions=2 if LIGHT else 4, trials_per_session=200 if LIGHT else 400,
                shared_fraction=0.2, image_size=32, grid=(16, 19, 16), snr=1.5, verbose="warning")
trials = concatenate_trials([load_nsd(root, subject=s, verbose="warning") for s in (1, 2)])
targets = nd.embeddings.embed_images(trials.stimuli, encoder="pixels", verbose="warning")
train = trials.select(split="train")
test = trials.select(split="test").average_repetitions()
print(train)
print(test)

# %%
# Ridge: one closed-form model per subject
# ----------------------------------------
true = targets.lookup(test.events["stimulus_id"])
groups = np.asarray(test.events["subject"])
n_cand = int(min(np.unique(groups, return_counts=True)[1].min(), 50))
retrieval = dict(n_candidates=n_cand, topk=(1, 5), n_boot=200, groups=groups, random_state=0,
                 verbose="warning")

ridge = nd.models.RidgeDecoder(alphas=np.logspace(0, 6, 9)).fit_trials(train, targets, verbose="warning")
ridge_scores = nd.tasks.evaluate_retrieval(ridge.predict_trials(test), true, **retrieval)

# %%
# The deep decoder: shared by both subjects
# -----------------------------------------
# Each subject has its own voxel count; the adapters map them to one shared space. Training is
# reproducible on CPU given ``seed`` (private ``torch.Generator`` objects).
n_voxels = {s: int(np.prod(t.feature_shape)) for s, t in train.by_subject().items()}
print("voxels per subject:", n_voxels)
model = nd.models.BrainDecoder(n_voxels, embed_dim=targets.dim, hidden_dim=256, n_blocks=1, seed=0)
trainer = nd.training.Trainer(model, loss="infonce", lr=1e-3, batch_size=64,
                              max_epochs=15 if LIGHT else 30, seed=0, verbose="warning")
trainer.fit(train, targets)
mlp_scores = nd.tasks.evaluate_retrieval(model.predict(test), true, **retrieval)
fig = nd.reports.plot_training_curves({"mlp": trainer.history_})

# %%
# Compare, subject by subject
# ---------------------------
for name, scores in {"ridge": ridge_scores, "mlp": mlp_scores}.items():
    m = scores.metrics["nway_top1_forward"]
    print(f"{name:>5}: {n_cand}-way top-1 = {m['value']:.3f} "
          f"[{m['ci_low']:.3f}, {m['ci_high']:.3f}] (chance {m['chance']:.3f})")
fig = nd.reports.plot_retrieval_bars({"ridge": ridge_scores, "mlp": mlp_scores}, metric="nway_top1_forward")

# %%
# On these small simulated datasets the closed-form ridge decoder is hard to beat; the deep decoder
# shares what it learns across subjects, which pays off with more subjects and trials (see the
# numbers in the :doc:`decoders guide <../decoders>`).
tmp.cleanup()
