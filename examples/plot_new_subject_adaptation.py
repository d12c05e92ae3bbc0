"""
Adapting a pretrained decoder to a new subject
==============================================

MindBridge's reset-tuning (:func:`neurodecode.training.adapt_subject`): pretrain a multi-subject
decoder on subjects 1 and 2, then give subject 3 a fresh adapter and train it on a fraction of its
data — first with the shared network frozen, then everything with a smaller learning rate for the
shared part. We compare it with the same network trained from scratch on the same few trials.
"""

# %%
import os
import tempfile

import numpy as np

import neurodecode as nd
from neurodecode.datasets import concatenate_trials, load_nsd, simulate
from neurodecode.training import adapt_subject

LIGHT = os.environ.get("NEURODECODE_DOCS_LIGHT", "0") == "1"
tmp = tempfile.TemporaryDirectory()
# ``snr=1.5``: a stronger signal than the default 0.4, so that the networks learn from little data
root = simulate("nsd", os.path.join(tmp.name, "nsd"), n_subjects=3, n_sessions=2 if LIGHT else 4,
                trials_per_session=200 if LIGHT else 400, shared_fraction=0.2, image_size=32,
                grid=(16, 19, 16), snr=1.5, verbose="warning")
pre = concatenate_trials([load_nsd(root, subject=s, verbose="warning") for s in (1, 2)])
new = load_nsd(root, subject=3, verbose="warning")
targets = nd.embeddings.embed_images(pre.stimuli, encoder="pixels", verbose="warning")

# %%
# Pretrain on subjects 1 and 2
# ----------------------------
epochs = 15 if LIGHT else 30
train = pre.select(split="train")
n_voxels = {s: int(np.prod(t.feature_shape)) for s, t in train.by_subject().items()}
model = nd.models.BrainDecoder(n_voxels, embed_dim=targets.dim, hidden_dim=256, n_blocks=1, seed=0)
nd.training.Trainer(model, lr=1e-3, batch_size=64, max_epochs=epochs, seed=0, verbose="warning").fit(
    train, targets)

# %%
# Subject 3: a quarter of its training trials
# -------------------------------------------
new_train = new.select(split="train")
sessions = sorted(set(new_train.events["session"]))
few = new_train.select(trial_in_session=lambda t: t < len(new_train) // (4 * len(sessions)))
new_test = new.select(split="test").average_repetitions()
print(f"subject 3: {len(few)} of {len(new_train)} training trials; {len(new_test)} test images")

result = adapt_subject(model, few, targets, freeze_epochs=epochs // 2, max_epochs=epochs, lr=1e-3,
                       seed=0, verbose="warning")
print(f"adapted in {result.time_s:.1f} s; best epoch per phase: {result.best_epochs}")

# %%
# The same network from scratch, on the same trials
# -------------------------------------------------
scratch = nd.models.BrainDecoder({3: int(np.prod(few.feature_shape))}, embed_dim=targets.dim, hidden_dim=256,
                                 n_blocks=1, seed=0)
nd.training.Trainer(scratch, lr=1e-3, batch_size=64, max_epochs=epochs, seed=0, verbose="warning").fit(
    few, targets)

true = targets.lookup(new_test.events["stimulus_id"])
kw = dict(n_candidates=min(50, len(new_test)), n_boot=200, random_state=0, verbose="warning")
scores = {"adapted": nd.tasks.evaluate_retrieval(result.model.predict(new_test), true, **kw),
          "from scratch": nd.tasks.evaluate_retrieval(scratch.predict(new_test), true, **kw)}
for name, s in scores.items():
    m = s.metrics["2way_forward"]
    print(f"{name:>12}: 2-way = {m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}] (chance 0.5)")

# %%
fig = nd.reports.plot_retrieval_bars(scores, metric="2way_forward")

# %%
# Training curves of both phases: phase 1 trains the adapter only, phase 2 everything.
fig = nd.reports.plot_training_curves({"adaptation": result.history})

tmp.cleanup()
