"""
Captions from decoded embeddings
================================

Turn decoded image embeddings into text by caption-bank retrieval
(:class:`neurodecode.tasks.captioning.CaptionBank`): each decoded embedding takes the caption of the
most similar *training* image, and the captions are scored against the test images' own captions with
the COCO caption metrics (:func:`neurodecode.tasks.caption_metrics.evaluate_captions`: BLEU-1..4,
ROUGE-L and CIDEr equal to pycocoevalcap's; METEOR and SPICE when Java is installed).

The simulator writes five captions per image from the same latents (shape, colour, size, position) as
the image, so a decoder that recovers the image also recovers what the captions say.
"""

# %%
import os
import tempfile

import matplotlib.pyplot as plt
import numpy as np

import neurodecode as nd
from neurodecode.datasets import load_nsd, simulate
from neurodecode.tasks.caption_metrics import evaluate_captions
from neurodecode.tasks.captioning import CaptionBank

LIGHT = os.environ.get("NEURODECODE_DOCS_LIGHT", "0") == "1"
tmp = tempfile.TemporaryDirectory()
root = simulate("nsd", os.path.join(tmp.name, "nsd"), n_subjects=1, n_sessions=2 if LIGHT else 4,
                trials_per_session=200 if LIGHT else 400, shared_fraction=0.2, image_size=32,
                grid=(16, 19, 16), verbose="warning")
trials = load_nsd(root, subject=1, verbose="warning")
train = trials.select(split="train")
test = trials.select(split="test").average_repetitions()
stimuli = trials.stimuli
print(stimuli.get_captions(test.events["stimulus_id"].iloc[0]))

# %%
# Decode, then retrieve captions of training images
# -------------------------------------------------
# The bank holds the captions of the training images only, each with the embedding of its image (the
# space the decoder predicts); with CLIP targets, ``CaptionBank.from_encoder`` embeds the caption text
# instead. ``exclude_ids`` guarantees that no query can return a caption of its own test image.
targets = nd.embeddings.embed_images(stimuli, encoder="pixels", verbose="warning")
ridge = nd.models.RidgeDecoder(alphas=np.logspace(0, 6, 9)).fit_trials(train, targets, verbose="warning")
decoded = ridge.predict_trials(test)

train_ids = sorted(set(train.events["stimulus_id"]))
captions = [c for sid in train_ids for c in stimuli.get_captions(sid)]
cap_ids = [sid for sid in train_ids for _ in stimuli.get_captions(sid)]
bank = CaptionBank(captions, targets.lookup(cap_ids), ids=cap_ids)
test_ids = list(test.events["stimulus_id"])
candidates = [best[0] for best in bank.retrieve(decoded, k=1, exclude_ids=test_ids, verbose="warning")]
references = [stimuli.get_captions(sid) for sid in test_ids]

# a baseline: the caption of a random training image for each test image
rng = np.random.default_rng(0)
shuffled = [captions[i] for i in rng.integers(0, len(captions), len(test_ids))]

# %%
# Scores with bootstrap CIs
# -------------------------
kw = dict(metrics=("bleu", "rouge_l", "cider"), tokenizer="python", n_boot=200, random_state=0,
          verbose="warning")
decoded_scores = evaluate_captions(candidates, references, **kw)
random_scores = evaluate_captions(shuffled, references, **kw)
print("decoded:", decoded_scores, sep="\n")
print("random captions:", random_scores, sep="\n")

# %%
# A few test images with their decoded caption
# --------------------------------------------
fig, axes = plt.subplots(1, 4, figsize=(10, 3))
for ax, sid, caption, refs in zip(axes, test_ids, candidates, references):
    ax.imshow(stimuli.get_images([sid])[0])
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(f"decoded: {caption}\ntrue: {refs[0]}", fontsize=7, wrap=True)
fig.tight_layout()

tmp.cleanup()
