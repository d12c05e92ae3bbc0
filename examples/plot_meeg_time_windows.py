"""
When is the stimulus decodable? M/EEG time windows
==================================================

Simulate THINGS-EEG2 (17 channels, 100 Hz, zero-shot split: the test concepts are never seen in
training) with stimulus information planted in a known time window, then fit one ridge decoder per
sliding window (:func:`neurodecode.analysis.decode_time_windows`) and find when retrieval of the unseen
test images rises above chance.
"""

# %%
import json
import os
import tempfile

import neurodecode as nd
from neurodecode.analysis import decode_time_windows, time_windows
from neurodecode.datasets import load_things_eeg2, simulate

LIGHT = os.environ.get("NEURODECODE_DOCS_LIGHT", "0") == "1"
tmp = tempfile.TemporaryDirectory()
root = simulate("things_eeg2", os.path.join(tmp.name, "things_eeg2"), n_subjects=1,
                n_train_concepts=60 if LIGHT else 200, images_per_concept=4, n_test_concepts=40,
                n_test_reps=10 if LIGHT else 20, image_size=16, verbose="warning")
planted = json.loads((root / "simulation.json").read_text())["parameters"]
print({k: v for k, v in planted.items() if k.startswith("signal")})

trials = load_things_eeg2(root, subject=1, verbose="warning")
train = trials.select(split="train")
test = trials.select(split="test").average_repetitions()  # one row per test image
print(train)
print(test)

# %%
# One decoder per window
# ----------------------
# 100 ms windows every 50 ms. Each refits ridge (penalty chosen on the training trials) on the trials
# cropped to the window and scores retrieval among all test images, with bootstrap CIs.
targets = nd.embeddings.embed_images(trials.stimuli, encoder="pixels", verbose="warning")
tmin, tmax = trials.info["times"][0], trials.info["times"][-1]
windows = time_windows(float(tmin), float(tmax), width=0.1, step=0.05)
scores = decode_time_windows(train, test, targets, windows, n_candidates=None, topk=(1, 5), n_boot=200,
                             verbose="warning")
print(scores[["start", "stop", "2way_forward", "2way_forward_ci_low", "2way_forward_ci_high", "top1_forward",
              "top5_forward"]].to_string(index=False, float_format="%.3f"))
peak = scores.iloc[scores.attrs["peak"]]
print(f"peak window: {peak['start']:.2f}–{peak['stop']:.2f} s")

# %%
# 2-way identification (chance 0.5) with its CI band; the planted window is shaded.
fig = nd.reports.plot_time_windows(scores, metric="2way_forward")
fig.axes[0].axvspan(*planted["signal_window"], color="tab:orange", alpha=0.15, label="planted window")
fig.axes[0].legend(loc="upper right", fontsize=8)

tmp.cleanup()
