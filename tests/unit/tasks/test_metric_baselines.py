"""Baselines of the reconstruction and caption metrics: shuffled pairing and mean image.

Each baseline is checked against an independent computation (numpy Pearson, the public
single-metric functions on re-paired inputs, closed forms), and against what must be true
(no fixed point, same seed same numbers, perfect reconstructions beat both, the cost claims).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from neurodecode.tasks.bootstrap import random_derangement
from neurodecode.tasks.caption_metrics import (
    CaptionScores,
    compute_bleu,
    compute_cider,
    compute_rouge_l,
    evaluate_captions,
    tokenize_captions,
)
from neurodecode.tasks.metrics import (
    FeatureExtractor,
    ReconstructionScores,
    correlation_distance,
    evaluate_reconstructions,
    ssim,
    two_way_identification,
)
from neurodecode.tasks.metrics.image import DERANGEMENT_BLOCK, N_DERANGEMENTS, _shuffle_pairings

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

N = 6
SIZE = 425  # the metrics' own resolution: PixCorr / SSIM see the images unresized


def _smooth(rng, n, size, low=6):
    """Natural-ish images: upsampled low-resolution noise, uint8 (n, size, size, 3)."""
    base = torch.from_numpy(rng.random((n, 3, low, low)).astype(np.float32))
    x = torch.nn.functional.interpolate(base, size=(size, size), mode="bilinear", align_corners=False)
    return np.round(x.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def pixel_case():
    rng = np.random.default_rng(0)
    target = _smooth(rng, N, SIZE)
    recon = np.round(0.6 * target + 0.4 * rng.integers(0, 256, target.shape)).astype(np.uint8)
    scores = evaluate_reconstructions(recon, target, metrics=("pixcorr", "ssim"), n_boot=100, random_state=3,
                                      verbose="error")
    return recon, target, scores


def _pearson(a, b):
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    a -= a.mean()
    b -= b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


# --------------------------------------------------------------------------- derangements
@pytest.mark.parametrize("n", [2, 3, 7, DERANGEMENT_BLOCK + 1, 2 * DERANGEMENT_BLOCK + 1, 70])
def test_pairings_are_derangements_within_blocks(n):
    blocks, perms = _shuffle_pairings(n, seed=11)
    assert perms.shape == (N_DERANGEMENTS, n)
    assert sorted(np.concatenate(blocks).tolist()) == list(range(n))  # the blocks partition the images
    assert min(len(b) for b in blocks) >= 2 and max(len(b) for b in blocks) <= DERANGEMENT_BLOCK + 1
    for p in perms:
        assert sorted(p.tolist()) == list(range(n))   # a permutation ...
        assert not np.any(p == np.arange(n))          # ... with no image paired with its own stimulus
        for b in blocks:                              # ... that maps each block onto itself
            assert set(p[b].tolist()) == set(b.tolist())
    _, again = _shuffle_pairings(n, seed=11)
    np.testing.assert_array_equal(again, perms)
    if n > 3:
        assert not np.array_equal(_shuffle_pairings(n, seed=12)[1], perms)


def test_random_derangement():
    np.testing.assert_array_equal(random_derangement(2, 0), [1, 0])
    for seed in range(20):
        p = random_derangement(5, seed)
        assert sorted(p.tolist()) == list(range(5)) and not np.any(p == np.arange(5))
    np.testing.assert_array_equal(random_derangement(9, 4), random_derangement(9, 4))
    with pytest.raises(ValueError, match="at least 2"):
        random_derangement(1, 0)


# --------------------------------------------------------------------------- pixel metrics
def test_shuffled_pixcorr_equals_numpy_pearson_over_the_derangements(pixel_case):
    recon, target, sc = pixel_case
    perms = sc.pairings
    assert perms.shape == (N_DERANGEMENTS, N) and not np.any(perms == np.arange(N))
    by_hand = np.array([[_pearson(target[p[i]] / 255.0, recon[i] / 255.0) for i in range(N)] for p in perms])
    # (the library divides uint8 by 255 in float32, hence the tolerance)
    np.testing.assert_allclose(sc.baseline_per_image["shuffled"]["pixcorr"], by_hand.mean(axis=0), atol=1e-7)
    assert sc.metrics["pixcorr"]["shuffled"] == pytest.approx(by_hand.mean(), abs=1e-7)
    # SSIM through the public function (checked against scikit-image elsewhere) on re-paired stimuli
    by_fn = np.mean([ssim(recon, target[p], per_image=True) for p in perms], axis=0)
    np.testing.assert_allclose(sc.baseline_per_image["shuffled"]["ssim"], by_fn, atol=1e-12)
    assert sc.metrics["ssim"]["shuffled"] == pytest.approx(by_fn.mean(), abs=1e-12)


def test_mean_image_pixel_scores(pixel_case):
    _, target, sc = pixel_case
    mean = (target.astype(np.float64) / 255.0).mean(axis=0)      # each stimulus with weight 1/n
    by_hand = np.array([_pearson(target[i] / 255.0, mean) for i in range(N)])
    np.testing.assert_allclose(sc.baseline_per_image["mean_image"]["pixcorr"], by_hand, atol=1e-6)
    const = np.repeat(mean[None].astype(np.float32), N, axis=0)
    np.testing.assert_allclose(sc.baseline_per_image["mean_image"]["ssim"], ssim(const, target, per_image=True),
                               atol=1e-6)
    assert sc.metrics["ssim"]["mean_image"] == pytest.approx(ssim(const, target), abs=1e-6)


def test_baselines_leave_values_and_cis_unchanged(pixel_case):
    recon, target, sc = pixel_case
    plain = evaluate_reconstructions(recon, target, metrics=("pixcorr", "ssim"), n_boot=100, random_state=3,
                                     baselines=False, verbose="error")
    for m in ("pixcorr", "ssim"):
        np.testing.assert_allclose(sc.per_image[m], plain.per_image[m], rtol=0, atol=1e-12)
        assert sc.metrics[m]["ci_low"] == pytest.approx(plain.metrics[m]["ci_low"], abs=1e-12)
        assert "shuffled" not in plain.metrics[m] and "mean_image" not in plain.metrics[m]
    assert plain.pairings is None and plain.baseline_per_image == {} and plain.protocol["baselines"] is None
    assert np.isnan(plain.to_frame()["shuffled"]).all()
    # same seed, same baselines; another seed, other derangements
    again = evaluate_reconstructions(recon, target, metrics=("pixcorr", "ssim"), n_boot=0, random_state=3,
                                     verbose="error")
    np.testing.assert_array_equal(again.pairings, sc.pairings)
    assert again.metrics["ssim"]["shuffled"] == sc.metrics["ssim"]["shuffled"]
    other = evaluate_reconstructions(recon, target, metrics=("pixcorr",), n_boot=0, random_state=4, verbose="error")
    assert not np.array_equal(other.pairings, sc.pairings)
    with pytest.raises(TypeError, match="baselines"):
        evaluate_reconstructions(recon, target, metrics=("pixcorr",), baselines="yes")


def test_perfect_beats_both_and_noise_beats_neither(pixel_case):
    _, target, _ = pixel_case
    perfect = evaluate_reconstructions(target, target.copy(), metrics=("pixcorr", "ssim"), n_boot=0,
                                       verbose="error")
    noise = np.random.default_rng(1).integers(0, 256, target.shape).astype(np.uint8)
    noisy = evaluate_reconstructions(noise, target, metrics=("pixcorr", "ssim"), n_boot=0, verbose="error")
    for m in ("pixcorr", "ssim"):
        d = perfect.metrics[m]
        assert d["value"] == pytest.approx(1.0) and d["value"] > d["shuffled"] and d["value"] > d["mean_image"]
        # pure noise scores no better than a constant, average image (smooth stimuli: SSIM ~0.9 for it)
        assert noisy.metrics[m]["value"] < noisy.metrics[m]["mean_image"]
    assert abs(noisy["pixcorr"] - noisy.metrics["pixcorr"]["shuffled"]) < 0.01   # both ~0
    # the mean image does not depend on the reconstructions
    assert noisy.metrics["ssim"]["mean_image"] == pytest.approx(perfect.metrics["ssim"]["mean_image"])


def test_export_round_trip_and_old_dicts(pixel_case):
    _, _, sc = pixel_case
    frame = sc.to_frame()
    assert list(frame.columns[6:8]) == ["shuffled", "mean_image"]
    assert frame.set_index("metric").loc["ssim", "mean_image"] == sc.metrics["ssim"]["mean_image"]
    long = sc.to_frame(per_image=True)
    np.testing.assert_allclose(long[long.metric == "pixcorr"]["shuffled"],
                               sc.baseline_per_image["shuffled"]["pixcorr"])
    back = ReconstructionScores.from_dict(json.loads(json.dumps(sc.to_dict())))
    for m in sc.names:
        for k in ("shuffled", "mean_image"):
            assert back.metrics[m][k] == pytest.approx(sc.metrics[m][k])
            np.testing.assert_allclose(back.baseline_per_image[k][m], sc.baseline_per_image[k][m])
    text = repr(sc)
    assert f"shuffled {sc.metrics['ssim']['shuffled']:.4f}" in text
    assert f"mean image {sc.metrics['ssim']['mean_image']:.4f}" in text
    bl = sc.protocol["baselines"]
    assert bl["n_derangements"] == N_DERANGEMENTS and isinstance(bl["seed"], int)
    assert str(N_DERANGEMENTS) in bl["description"] and "1/n" in bl["description"]
    # a dict written before the baselines existed still loads, with empty baseline cells
    old = sc.to_dict()
    old.pop("baseline_per_image")
    for d in old["metrics"].values():
        d.pop("shuffled"), d.pop("mean_image")
    legacy = ReconstructionScores.from_dict(old)
    assert legacy.baseline_per_image == {} and np.isnan(legacy.to_frame()["mean_image"]).all()
    assert "shuffled" not in repr(legacy)
    # pooling: mean of the groups' baselines
    pooled = ReconstructionScores.combine({"a": sc, "b": back})
    assert pooled.metrics["ssim"]["shuffled"] == pytest.approx(sc.metrics["ssim"]["shuffled"])
    assert len(pooled.baseline_per_image["mean_image"]["pixcorr"]) == 2 * N
    assert "shuffled" not in ReconstructionScores.combine({"a": sc, "b": legacy}).metrics["ssim"]


def test_single_image_has_no_shuffled_pairing():
    img = _smooth(np.random.default_rng(2), 1, 32)
    sc = evaluate_reconstructions(img, img, metrics=("pixcorr",), n_boot=0, verbose="error")
    assert sc.pairings is None and np.isnan(sc.metrics["pixcorr"]["shuffled"])
    assert sc.metrics["pixcorr"]["mean_image"] == pytest.approx(1.0)  # the mean of one image is that image


# --------------------------------------------------------------------------- feature metrics
@pytest.fixture(scope="module")
def feature_case():
    """AlexNet (2-way) and EfficientNet (distance) with random weights; every extract call recorded."""
    rng = np.random.default_rng(5)
    target = _smooth(rng, N, 64)
    recon = np.round(0.5 * target + 0.5 * _smooth(rng, N, 64)).astype(np.uint8)
    calls: list = []
    nets = {}
    for i, name in enumerate(("alexnet", "effnet")):
        ext = FeatureExtractor(name, allow_random=True, random_state=i, batch_size=16, verbose="error")
        inner_extract, inner_forward = ext.extract, ext._forward

        def extract(images, _inner=inner_extract, _name=name, **kw):
            out = _inner(images, **kw)
            calls.append((_name, images, out))
            return out

        def forward(x, _inner=inner_forward, _name=name):
            calls.append((_name, "forward", len(x)))
            return _inner(x)

        ext.extract, ext._forward = extract, forward
        nets[name] = ext
    sc = evaluate_reconstructions(recon, target, metrics=("alexnet2", "alexnet5", "effnet"), networks=nets,
                                  n_boot=0, random_state=0, verbose="error")
    n_calls = len(calls)
    plain = evaluate_reconstructions(recon, target, metrics=("alexnet2", "alexnet5", "effnet"), networks=nets,
                                     n_boot=0, random_state=0, baselines=False, verbose="error")
    return recon, target, sc, plain, calls[:n_calls], calls[n_calls:]


def _features(calls, name):
    """(recon, target, mean-image) features and the mean image, in the order evaluate_reconstructions asks."""
    ext = [(images, out) for n, images, out in calls if n == name and not isinstance(images, str)]
    assert len(ext) == 3
    return ext[0][1], ext[1][1], ext[2][1], ext[2][0]


def test_feature_baselines_cost_no_extra_forward_for_shuffled_and_one_for_mean(feature_case):
    *_, calls, plain_calls = feature_case
    for name in ("alexnet", "effnet"):
        fw = [c[2] for c in calls if c[0] == name and isinstance(c[1], str)]
        plain_fw = [c[2] for c in plain_calls if c[0] == name and isinstance(c[1], str)]
        assert plain_fw == [N, N]         # recon, target
        assert fw == [N, N, 1]            # + one forward of the one mean image


def test_shuffled_two_way_and_distance_equal_the_public_functions_on_permuted_rows(feature_case):
    _, _, sc, plain, calls, _ = feature_case
    perms = sc.pairings
    fr, ft, _, _ = _features(calls, "alexnet")
    for m, layer in (("alexnet2", "features.4"), ("alexnet5", "features.11")):
        by_fn = np.mean([two_way_identification(fr[layer], ft[layer][p], per_image=True) for p in perms], axis=0)
        np.testing.assert_allclose(sc.baseline_per_image["shuffled"][m], by_fn)
        np.testing.assert_array_equal(sc.per_image[m], plain.per_image[m])
    fr, ft, _, _ = _features(calls, "effnet")
    from scipy.spatial.distance import correlation

    f64 = {k: v["avgpool"].astype(np.float64) for k, v in (("r", fr), ("t", ft))}  # random EffNet: tiny values
    by_hand = np.mean([[correlation(f64["t"][p[i]], f64["r"][i]) for i in range(N)] for p in perms], axis=0)
    np.testing.assert_allclose(sc.baseline_per_image["shuffled"]["effnet"], by_hand, atol=1e-6)
    np.testing.assert_allclose(
        sc.baseline_per_image["shuffled"]["effnet"],
        np.mean([correlation_distance(fr["avgpool"], ft["avgpool"][p], per_image=True) for p in perms], axis=0))


def test_mean_image_two_way_closed_form_and_distance(feature_case):
    _, target, sc, _, calls, _ = feature_case
    _, ft, fm, mean_img = _features(calls, "alexnet")
    np.testing.assert_allclose(mean_img[0], (target.astype(np.float64) / 255).mean(axis=0), atol=1e-6)
    for m, layer in (("alexnet2", "features.4"), ("alexnet5", "features.11")):
        c = np.array([np.corrcoef(ft[layer][i], fm[layer][0])[0, 1] for i in range(N)])
        # reconstruction j (= the mean image) scores the fraction of stimuli i with r(t_i, m) < r(t_j, m)
        closed = np.array([np.sum(c < c[j]) / (N - 1) for j in range(N)])
        np.testing.assert_allclose(sc.baseline_per_image["mean_image"][m], closed)
        assert sc.metrics[m]["mean_image"] == pytest.approx(0.5)  # no ties: every pair counted once
    _, ft, fm, _ = _features(calls, "effnet")
    np.testing.assert_allclose(sc.baseline_per_image["mean_image"]["effnet"],
                               correlation_distance(np.repeat(fm["avgpool"], N, axis=0), ft["avgpool"],
                                                    per_image=True), atol=1e-12)


# --------------------------------------------------------------------------- captions
REFS = [["a man riding a wave on a surfboard", "a surfer rides a big wave"],
        ["two dogs play in the grass", "dogs playing on a lawn"],
        ["a plate of food with broccoli", "a dish of vegetables and rice"],
        ["a red bus on a city street", "a double decker bus driving down the road"],
        ["a cat sleeping on a couch", "a kitten lying on a sofa"],
        ["a train at a station", "a passenger train stopped at the platform"]]
CANDS = ["a man surfing a wave", "a dog in the grass", "a plate of broccoli", "a bus on the street",
         "a cat on a sofa", "a train in a station"]


def _caption_embeddings(seed=0, dim=12):
    rng = np.random.default_rng(seed)
    img = rng.standard_normal((len(CANDS), dim))
    return img, img + 0.5 * rng.standard_normal(img.shape), [img[i] + rng.standard_normal((2, dim))
                                                             for i in range(len(CANDS))]


def test_caption_shuffled_pairing():
    img, cand, ref_emb = _caption_embeddings()
    kw = {"image_embeddings": img, "candidate_embeddings": cand, "reference_embeddings": ref_emb,
          "metrics": ["bleu", "rouge_l", "cider", "clip_s", "refclip_s"], "tokenizer": "python",
          "n_boot": 100, "random_state": 7}
    sc = evaluate_captions(CANDS, REFS, **kw)
    bl = sc.protocol["baselines"]
    assert bl["n_derangements"] == 5 and bl["not_shuffled"] == ["meteor", "spice"]
    rng = np.random.default_rng([bl["seed"], 2])   # the recorded seed reproduces the derangements
    perms = [random_derangement(len(CANDS), rng) for _ in range(5)]
    toks = tokenize_captions(CANDS, tokenizer="python")
    rtoks = [tokenize_captions(r, tokenizer="python") for r in REFS]
    bleu = np.mean([compute_bleu(toks, [rtoks[j] for j in p])[0] for p in perms], axis=0)
    for k in range(4):
        assert sc.metrics[f"bleu{k + 1}"]["shuffled"] == pytest.approx(bleu[k], abs=1e-12)
    assert sc.metrics["rouge_l"]["shuffled"] == pytest.approx(
        np.mean([compute_rouge_l(toks, [rtoks[j] for j in p])[0] for p in perms]))
    assert sc.metrics["cider"]["shuffled"] == pytest.approx(
        np.mean([compute_cider(toks, [rtoks[j] for j in p])[0] for p in perms]))
    def unit(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    clip_s = np.mean([2.5 * np.clip(np.sum(unit(img[p]) * unit(cand), axis=1), 0, None).mean() for p in perms])
    assert sc.metrics["clip_s"]["shuffled"] == pytest.approx(clip_s)
    # matching captions beat a shuffled pairing on every metric
    for name, d in sc.metrics.items():
        assert d["value"] > d["shuffled"], name
    # CIs unchanged, shown and exported
    plain = evaluate_captions(CANDS, REFS, **kw, baselines=False)
    assert plain.metrics["cider"]["ci_low"] == sc.metrics["cider"]["ci_low"] and "shuffled" not in plain.metrics["cider"]
    assert plain.protocol["baselines"] is None
    frame = sc.to_frame(percent=True)
    assert frame.set_index("metric").loc["cider", "shuffled"] == pytest.approx(100 * sc.metrics["cider"]["shuffled"])
    assert "shuffled pairing" in repr(sc) and "shuffled pairing" not in repr(plain)
    back = CaptionScores.from_dict(json.loads(json.dumps(sc.to_dict())))
    assert back.metrics["rouge_l"]["shuffled"] == pytest.approx(sc.metrics["rouge_l"]["shuffled"])
    one = evaluate_captions(CANDS[:1], REFS[:1], metrics=["cider"], tokenizer="python", n_boot=0)
    assert np.isnan(one.metrics["cider"]["shuffled"])   # one item: nothing to pair it with
