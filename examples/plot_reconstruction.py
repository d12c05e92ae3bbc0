"""
Image reconstruction with a tiny diffusion pipeline
===================================================

The two-stage reconstruction of MindEye2 and friends: a brain decoder predicts an image embedding,
and a latent-diffusion pipeline conditioned on that embedding generates the image
(:class:`neurodecode.tasks.reconstruction.Reconstructor`). Reconstructions are then scored against
the seen images with MindEye2's low-level metrics
(:func:`neurodecode.tasks.metrics.evaluate_reconstructions`).

No weights are downloaded here: the pipeline is a Kandinsky 2.2 of a few hundred thousand random
parameters built offline by :func:`neurodecode.tasks.reconstruction.make_random_pipeline`, so the
images show the machinery, not a real reconstruction. With real weights the same code runs
``Reconstructor.from_pretrained("kandinsky", "/models/kandinsky-2-2-decoder")`` on decoded CLIP
embeddings (see :doc:`../reconstruction`).
"""

# %%
import os
import tempfile

import matplotlib.pyplot as plt
import numpy as np

import neurodecode as nd
from neurodecode.datasets import load_nsd, simulate
from neurodecode.tasks.metrics import evaluate_reconstructions
from neurodecode.tasks.reconstruction import Reconstructor, make_random_pipeline

LIGHT = os.environ.get("NEURODECODE_DOCS_LIGHT", "0") == "1"
tmp = tempfile.TemporaryDirectory()
root = simulate("nsd", os.path.join(tmp.name, "nsd"), n_subjects=1, n_sessions=2,
                trials_per_session=200 if LIGHT else 400, shared_fraction=0.2, image_size=32,
                grid=(16, 19, 16), verbose="warning")
trials = load_nsd(root, subject=1, verbose="warning")
train = trials.select(split="train")
test = trials.select(split="test").average_repetitions()

# %%
# Stage 1: decode image embeddings
# --------------------------------
targets = nd.embeddings.embed_images(trials.stimuli, encoder="pixels", verbose="warning")
ridge = nd.models.RidgeDecoder(alphas=np.logspace(0, 6, 9)).fit_trials(train, targets, verbose="warning")
n_items = 4 if LIGHT else 8
decoded = ridge.predict_trials(test)[:n_items]
ids = list(test.events["stimulus_id"])[:n_items]
print("decoded embeddings:", decoded.shape)

# %%
# Stage 2: generate from the decoded embeddings
# ---------------------------------------------
# The tiny pipeline is built to take embeddings of the decoder's size; a real pipeline fixes the
# embedding space (e.g. CLIP ViT-bigG/14 for Kandinsky 2.2), and an
# :class:`~neurodecode.tasks.reconstruction.EmbeddingPrior` can map decoded embeddings into it.
pipe = make_random_pipeline("kandinsky", embed_dim=targets.dim, seed=0)
recon = Reconstructor("kandinsky", pipe, n_samples=1, num_inference_steps=4 if LIGHT else 10,
                      height=32, width=32, device="cpu", verbose="warning")
result = recon.reconstruct(decoded, seeds=0, ids=ids)
print(result.images.shape, f"{result.timing['images_per_s']:.1f} images/s")
result.save(os.path.join(tmp.name, "reconstructions"))  # PNGs + manifest.json
print(sorted(os.listdir(os.path.join(tmp.name, "reconstructions")))[:5])

# %%
# Seen images and reconstructions
# -------------------------------
seen = trials.stimuli.get_images(ids)
fig, axes = plt.subplots(2, n_items, figsize=(1.6 * n_items, 3.4))
for i in range(n_items):
    for row, (image, label) in enumerate([(seen[i], "seen"), (result.images[i], "generated")]):
        axes[row, i].imshow(image)
        axes[row, i].set_xticks([]), axes[row, i].set_yticks([])
        if i == 0:
            axes[row, i].set_ylabel(label)
fig.tight_layout()

# %%
# Scores with bootstrap CIs
# -------------------------
# PixCorr and SSIM need no network weights (the feature-network metrics of MindEye2 take local weights,
# ``networks={"alexnet": path, ...}``). With random generator weights they sit at chance.
scores = evaluate_reconstructions(result.images, seen, metrics=("pixcorr", "ssim"), n_boot=200,
                                  random_state=0, verbose="warning")
print(scores)

tmp.cleanup()
