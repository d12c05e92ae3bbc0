"""Image reconstruction metrics (MindEye2 protocol): hand-computed cases, skimage/torchvision
equality, random-weight networks, bootstrap CIs and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from neurodecode.tasks.metrics import (
    METRICS,
    NETWORKS,
    FeatureExtractor,
    ReconstructionScores,
    correlation_distance,
    evaluate_reconstructions,
    pixcorr,
    resize_images,
    ssim,
    two_way_identification,
)

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

N_IMAGES = 4


def _smooth_images(rng, n, size, *, low=8):
    """Natural-ish images: upsampled low-resolution noise, uint8 (n, size, size, 3)."""
    base = torch.from_numpy(rng.random((n, 3, low, low)).astype(np.float32))
    x = torch.nn.functional.interpolate(base, size=(size, size), mode="bilinear", align_corners=False)
    return np.round(x.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    target = _smooth_images(rng, N_IMAGES, 64)
    noise = rng.integers(0, 256, target.shape)
    recon = np.round(0.6 * target + 0.4 * noise).astype(np.uint8)
    return recon, target


@pytest.fixture(scope="module")
def tiny_clip():
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    with torch.random.fork_rng(devices=[]):
        torch.random.manual_seed(0)
        return CLIP(embed_dim=16,
                    vision_cfg=CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=32, image_size=224),
                    text_cfg=CLIPTextCfg(context_length=8, vocab_size=64, width=32, heads=2, layers=1))


@pytest.fixture(scope="module")
def extractors(tiny_clip):
    """Every metric network once, real architectures with random weights."""
    nets = {name: FeatureExtractor(name, allow_random=True, random_state=i, verbose="error")
            for i, name in enumerate(["alexnet", "inception", "effnet", "swav"])}
    nets["clip"] = FeatureExtractor("clip", model=tiny_clip)
    return nets


def _recording(ext, log):
    """Wrap ``ext.extract`` so the features evaluate_reconstructions computes are kept for the tests."""
    inner = ext.extract

    def extract(images, **kwargs):
        out = inner(images, **kwargs)
        log.setdefault(ext.network, []).append(out)
        return out

    ext.extract = extract
    return ext


@pytest.fixture(scope="module")
def evaluated(images, extractors):
    """One full evaluation; also returns each network's (recon, target) features from that run."""
    recon, target = images
    log: dict = {}
    nets = {k: _recording(v, log) for k, v in extractors.items()}
    try:
        sc = evaluate_reconstructions(recon, target, networks=nets, n_boot=200, random_state=0,
                                      verbose="error")
    finally:
        for ext in nets.values():
            del ext.extract  # back to the class method
    return sc, {k: tuple(v) for k, v in log.items()}


@pytest.fixture(scope="module")
def scores(evaluated):
    return evaluated[0]


@pytest.fixture(scope="module")
def feats(evaluated):
    """network -> (features of the reconstructions, features of the targets)."""
    return evaluated[1]


def _me2_two_way(recon_feats, target_feats):
    """MindEye2's ``two_way_identification`` after the forward passes (final_evaluations)."""
    n = len(target_feats)
    r = np.corrcoef(target_feats, recon_feats)[:n, n:]
    congruents = np.diag(r)
    success = r < congruents
    return np.sum(success, 0) / (n - 1)


# --------------------------------------------------------------------------- pixel metrics
def test_pixcorr_by_hand_at_native_size():
    """At 425 px nothing is resized: PixCorr is np.corrcoef of the flattened images."""
    rng = np.random.default_rng(1)
    t = rng.random((3, 425, 425, 3))
    r = 0.5 * t + 0.5 * rng.random(t.shape)
    expected = [np.corrcoef(t[i].ravel(), r[i].ravel())[0, 1] for i in range(3)]
    np.testing.assert_allclose(pixcorr(r, t, per_image=True), expected, rtol=0, atol=1e-6)
    assert pixcorr(r, t) == pytest.approx(np.mean(expected), abs=1e-6)
    # channels-first tensors and uint8 give the same numbers
    r_t = torch.from_numpy(r.transpose(0, 3, 1, 2).astype(np.float32))
    t_t = torch.from_numpy(t.transpose(0, 3, 1, 2).astype(np.float32))
    assert pixcorr(r_t, t_t) == pytest.approx(np.mean(expected), abs=1e-6)
    u8 = (t * 255).round().astype(np.uint8)
    assert pixcorr(u8, u8.astype(np.float32) / 255) == pytest.approx(1.0, abs=1e-12)


def test_pixcorr_ssim_match_mindeye2_code(images):
    """Same numbers as MindEye2's cells: torchvision Resize(425) + np.corrcoef / rgb2gray + skimage SSIM."""
    from torchvision import transforms

    skimage_metrics = pytest.importorskip("skimage.metrics")
    from skimage.color import rgb2gray

    recon, target = images
    all_images = torch.from_numpy(target).permute(0, 3, 1, 2).float() / 255
    all_recons = torch.from_numpy(recon).permute(0, 3, 1, 2).float() / 255
    pre = transforms.Resize(425, interpolation=transforms.InterpolationMode.BILINEAR, antialias=False)
    flat_i = pre(all_images).reshape(len(all_images), -1)
    flat_r = pre(all_recons).view(len(all_recons), -1)
    me2_pix = [np.corrcoef(flat_i[i], flat_r[i])[0][1] for i in range(len(all_images))]
    np.testing.assert_allclose(pixcorr(recon, target, per_image=True), me2_pix, atol=1e-6)

    img_gray = rgb2gray(pre(all_images).permute(0, 2, 3, 1).numpy().astype(np.float64))
    rec_gray = rgb2gray(pre(all_recons).permute(0, 2, 3, 1).numpy().astype(np.float64))
    me2_ssim = [skimage_metrics.structural_similarity(rec, im, gaussian_weights=True, sigma=1.5,
                                                      use_sample_covariance=False, data_range=1.0)
                for im, rec in zip(img_gray, rec_gray)]
    ours = ssim(recon, target, per_image=True)
    np.testing.assert_allclose(ours, me2_ssim, rtol=0, atol=1e-10)
    assert 0 < ours.min() and ours.max() < 1


def test_ssim_by_hand_without_resize():
    """skimage on 425-px grayscale images equals our SSIM (no resize, no torchvision)."""
    skimage_metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(2)
    t = rng.random((2, 425, 425, 3))
    r = np.clip(t + 0.1 * rng.standard_normal(t.shape), 0, 1)
    gray = np.array([0.2125, 0.7154, 0.0721])
    expected = [skimage_metrics.structural_similarity(r[i] @ gray, t[i] @ gray, gaussian_weights=True, sigma=1.5,
                                                      use_sample_covariance=False, data_range=1.0)
                for i in range(2)]
    np.testing.assert_allclose(ssim(r, t, per_image=True), expected, rtol=0, atol=1e-10)


def test_resize_images_matches_torchvision():
    from torchvision import transforms

    rng = np.random.default_rng(3)
    x = rng.random((2, 40, 60, 3)).astype(np.float32)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)
    for antialias in (False, True):
        ref = transforms.Resize(25, antialias=antialias)(xt).permute(0, 2, 3, 1).numpy()
        out = resize_images(x, 25, antialias=antialias)
        assert out.shape == (2, 25, 37, 3)  # shorter side 25, long side int(25 * 60 / 40)
        np.testing.assert_allclose(out, ref, atol=1e-6)
    assert resize_images(x, (16, 16)).shape == (2, 16, 16, 3)


# --------------------------------------------------------------------------- feature metrics
def test_two_way_identification_by_hand():
    # orthogonal, centred targets; recon 0 = target 0 (r = 1 vs 0, 0); recon 1 = t1 + 2 t2
    # (r with t1 = 1/3, with t2 = 0.94, with t0 = 0 -> 1 of 2); recon 2 = -t2 (r = -1 -> 0 of 2)
    t = np.array([[1.0, -1, 0, 0], [0, 0, 1, -1], [1, 1, -1, -1]])
    r = np.stack([t[0], t[1] + 2 * t[2], -t[2]])
    np.testing.assert_allclose(two_way_identification(r, t, per_image=True), [1.0, 0.5, 0.0])
    assert two_way_identification(r, t) == pytest.approx(0.5)
    assert two_way_identification(t, t) == 1.0  # distinct images identify themselves perfectly


def test_two_way_identification_matches_mindeye2_with_ties():
    rng = np.random.default_rng(4)
    t = rng.standard_normal((12, 50))
    t[5] = t[3]  # a duplicated stimulus: its correlation ties with the true one and fails
    r = t + 1.5 * rng.standard_normal(t.shape)
    np.testing.assert_allclose(two_way_identification(r, t, per_image=True), _me2_two_way(r, t), atol=1e-12)
    torch_in = two_way_identification(torch.from_numpy(r).float(), torch.from_numpy(t).float())
    assert torch_in == pytest.approx(_me2_two_way(r.astype(np.float32), t.astype(np.float32)).mean())


def test_correlation_distance_matches_scipy():
    from scipy.spatial.distance import correlation

    rng = np.random.default_rng(5)
    t = rng.random((4, 3, 7))  # trailing dims are flattened
    r = t + rng.random(t.shape)
    expected = [correlation(t[i].ravel(), r[i].ravel()) for i in range(4)]
    np.testing.assert_allclose(correlation_distance(r, t, per_image=True), expected, atol=1e-12)
    assert correlation_distance(t, t) == pytest.approx(0.0, abs=1e-12)
    assert correlation_distance(-t, t) == pytest.approx(2.0)


def test_feature_extractor_outputs(feats, extractors):
    dims = {"alexnet": {"features.4": 192 * 31 * 31, "features.11": 256 * 15 * 15},
            "inception": {"avgpool": 2048}, "effnet": {"avgpool": 1280}, "swav": {"avgpool": 2048},
            "clip": {"encode_image": 16}}
    for name in extractors:
        out = feats[name][0]
        assert set(out) == set(NETWORKS[name].layers)
        for layer, dim in dims[name].items():
            assert out[layer].shape == (N_IMAGES, dim) and out[layer].dtype == np.float32
    assert extractors["inception"].model_.transform_input  # as torchvision builds the pretrained net
    assert "random" in repr(extractors["alexnet"])


def test_feature_extractor_matches_create_feature_extractor(images, extractors):
    """Hooks + our preprocessing = MindEye2's create_feature_extractor + transforms pipeline."""
    from torchvision import transforms
    from torchvision.models.feature_extraction import create_feature_extractor

    recon, _ = images
    ext = extractors["alexnet"]
    fe = create_feature_extractor(ext.model_, return_nodes=["features.4", "features.11"])
    pre = transforms.Compose([transforms.Resize(256, interpolation=transforms.InterpolationMode.BILINEAR,
                                                antialias=False),
                              transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
    x = torch.from_numpy(recon).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        ref = fe(torch.stack([pre(im) for im in x]))
    ours = ext.extract(recon)
    for layer in ("features.4", "features.11"):
        np.testing.assert_allclose(ours[layer], ref[layer].flatten(1).numpy(), rtol=1e-5, atol=1e-6)


def test_random_init_is_seeded_and_leaves_global_rng(images):
    state = torch.random.get_rng_state()
    a = FeatureExtractor("alexnet", allow_random=True, random_state=7, verbose="error")
    b = FeatureExtractor("alexnet", allow_random=True, random_state=7, verbose="error")
    c = FeatureExtractor("alexnet", allow_random=True, random_state=8, verbose="error")
    assert torch.equal(torch.random.get_rng_state(), state)
    x = images[1][:1]
    np.testing.assert_array_equal(a.extract(x)["features.11"], b.extract(x)["features.11"])
    assert not np.array_equal(a.extract(x)["features.11"], c.extract(x)["features.11"])


def test_feature_extractor_loads_local_weights(tmp_path, images, extractors):
    from safetensors.torch import save_file

    def same_weights(a, b, skip=()):
        sa, sb = a.state_dict(), b.state_dict()
        return all(torch.equal(sa[k], sb[k]) for k in sa if not k.startswith(skip))

    eff = extractors["effnet"]
    sd = {k: v.contiguous() for k, v in eff.model_.state_dict().items()}
    save_file(sd, str(tmp_path / "effnet.safetensors"))
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, tmp_path / "effnet.pth")
    for fname in ("effnet.safetensors", "effnet.pth"):
        loaded = FeatureExtractor("effnet", tmp_path / fname, verbose="error")
        assert loaded.weights_path_ == tmp_path / fname and not loaded.random_weights_
        assert same_weights(loaded.model_, eff.model_)
    with pytest.raises(ValueError, match="do not fit"):  # wrong architecture
        FeatureExtractor("alexnet", tmp_path / "effnet.pth")
    torch.save([1, 2], tmp_path / "not_a_state_dict.pt")
    with pytest.raises(TypeError, match="not a state_dict"):
        FeatureExtractor("effnet", tmp_path / "not_a_state_dict.pt")

    # SwAV's own checkpoint: "module." prefixes, a projection head and prototypes, no fc
    swav = extractors["swav"]
    ck = {"module." + k: v for k, v in swav.model_.state_dict().items() if not k.startswith("fc.")}
    ck["module.projection_head.0.weight"] = torch.zeros(2, 2)
    ck["module.prototypes.weight"] = torch.zeros(3, 2)
    torch.save(ck, tmp_path / "swav_800ep_pretrain.pth.tar")
    loaded = FeatureExtractor("swav", tmp_path / "swav_800ep_pretrain.pth.tar", verbose="error")
    assert same_weights(loaded.model_, swav.model_, skip=("fc.",))


# --------------------------------------------------------------------------- evaluate
def test_identical_images_score_perfectly(images, extractors, feats):
    _, target = images
    cheap = {k: extractors[k] for k in ("alexnet", "clip")}
    sc = evaluate_reconstructions(target, target.copy(), metrics=("pixcorr", "ssim", "alexnet2", "alexnet5",
                                                                  "clip"),
                                  networks=cheap, n_boot=50, verbose="error")
    assert sc["pixcorr"] == pytest.approx(1.0, abs=1e-9)
    assert sc["ssim"] == pytest.approx(1.0, abs=1e-9)
    for name in ("alexnet2", "alexnet5", "clip"):
        assert sc[name] == 1.0, name
    # the costly networks: the same target features on both sides
    assert two_way_identification(feats["inception"][1]["avgpool"], feats["inception"][1]["avgpool"]) == 1.0
    for name in ("effnet", "swav"):
        f = feats[name][1]["avgpool"]
        assert correlation_distance(f, f) == pytest.approx(0.0, abs=1e-6), name


def test_evaluate_matches_the_single_metric_functions(images, feats, scores):
    recon, target = images
    assert scores.names == list(METRICS)
    assert scores["pixcorr"] == pytest.approx(pixcorr(recon, target))
    assert scores["ssim"] == pytest.approx(ssim(recon, target))
    for name in METRICS:
        info = METRICS[name]
        if info.network is None:
            continue
        fr, ft = feats[info.network][0][info.layer], feats[info.network][1][info.layer]
        if info.kind == "two_way":
            np.testing.assert_allclose(scores.per_image[name], _me2_two_way(fr, ft), err_msg=name)
        else:
            np.testing.assert_allclose(scores.per_image[name], correlation_distance(fr, ft, per_image=True),
                                       err_msg=name)
    assert scores["pixcorr"] > 0.3  # the reconstructions carry 60% of the target


def test_scores_ci_directions_and_exports(scores):
    for name, d in scores.metrics.items():
        assert d["ci_low"] <= d["value"] <= d["ci_high"], name
        assert d["higher_is_better"] is METRICS[name].higher_is_better
        assert len(scores.per_image[name]) == N_IMAGES
    assert scores.metrics["alexnet2"]["chance"] == 0.5 and np.isnan(scores.metrics["ssim"]["chance"])
    assert scores.replicates.shape == (200, len(METRICS))

    frame = scores.to_frame()
    assert list(frame["metric"]) == list(METRICS)
    assert dict(zip(frame["metric"], frame["direction"]))["swav"] == "lower"
    long = scores.to_frame(per_image=True)
    assert len(long) == N_IMAGES * len(METRICS) and set(long.columns) == {"image", "metric", "label", "score",
                                                                          "shuffled", "mean_image"}

    d = json.loads(json.dumps(scores.to_dict()))
    back = ReconstructionScores.from_dict(d)
    assert back.names == scores.names and back.replicates is None
    for name in scores.names:
        assert back[name] == pytest.approx(scores[name])
        np.testing.assert_allclose(back.per_image[name], scores.per_image[name])
    assert "PixCorr" in repr(scores) and "↓" in repr(scores)
    assert "2-way identification" in scores.description


def test_combine_pools_groups(scores):
    pooled = ReconstructionScores.combine({"subj01": scores, "subj02": scores})
    assert pooled.n_images == 2 * N_IMAGES
    for name in scores.names:
        assert pooled[name] == pytest.approx(scores[name])
        assert pooled.metrics[name]["ci_low"] == pytest.approx(scores.metrics[name]["ci_low"])
    no_reps = ReconstructionScores.from_dict(scores.to_dict())
    assert np.isnan(ReconstructionScores.combine({"a": no_reps, "b": scores}).metrics["ssim"]["ci_low"])


def test_subset_of_metrics_without_networks(images):
    recon, target = images
    sc = evaluate_reconstructions(recon, target, metrics=("ssim", "pixcorr"), n_boot=0, verbose="error")
    assert sc.names == ["pixcorr", "ssim"]  # table order
    assert np.isnan(sc.metrics["ssim"]["ci_low"]) and sc.replicates is None
    assert sc.protocol["networks"] == {}


def test_constant_image_gives_nan_and_warns():
    rng = np.random.default_rng(6)
    t = rng.random((3, 32, 32, 3))
    r = t.copy()
    r[1] = 0.5
    with pytest.warns(UserWarning, match="NaN"):
        val = pixcorr(r, t)
    assert np.isnan(pixcorr(r, t, per_image=True)[1])
    assert val == pytest.approx(1.0)


# --------------------------------------------------------------------------- errors
def test_bad_images_raise(images):
    recon, target = images
    with pytest.raises(ValueError, match="aligned"):
        pixcorr(recon[:3], target)
    with pytest.raises(ValueError, match="RGB with 3 channels"):
        pixcorr(recon[..., :2], target[..., :2])
    with pytest.raises(ValueError, match="single image"):
        pixcorr(recon[0], target[0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pixcorr(recon.astype(np.float32), target.astype(np.float32))
    with pytest.raises(TypeError, match="uint8"):
        pixcorr(recon.astype(np.int64), target.astype(np.int64))
    with pytest.raises(ValueError, match="aspect ratio"):
        pixcorr(np.zeros((2, 32, 48, 3), np.uint8), np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="same shape"):
        two_way_identification(np.zeros((3, 4)), np.zeros((3, 5)))
    with pytest.raises(ValueError, match="at least 2"):
        two_way_identification(np.ones((1, 4)), np.ones((1, 4)))


def test_bad_options_raise(images, extractors):
    recon, target = images
    with pytest.raises(ValueError, match="'metrics'"):
        evaluate_reconstructions(recon, target, metrics=("lpips",))
    with pytest.raises(ValueError, match="Unknown key"):
        evaluate_reconstructions(recon, target, metrics=("alexnet2",), networks={"vgg": "x.pth"})
    with pytest.raises(ValueError, match="n_boot"):
        evaluate_reconstructions(recon, target, metrics=("ssim",), n_boot=-1)
    with pytest.raises(ValueError, match="FeatureExtractor for 'alexnet'"):
        evaluate_reconstructions(recon, target, metrics=("swav",), networks={"swav": extractors["alexnet"]})
    with pytest.raises(ValueError, match="'network'"):
        FeatureExtractor("vgg16", allow_random=True)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        FeatureExtractor("alexnet", model=object())
    with pytest.raises(TypeError, match="encode_image"):
        FeatureExtractor("clip", model=extractors["alexnet"].model_)
    with pytest.raises(ValueError, match="not both"):
        FeatureExtractor("alexnet", "x.pth", model=extractors["alexnet"].model_)


def test_missing_weights_raise_with_download_hint(images, tmp_path):
    recon, target = images
    # no weights and no allow_random: every missing network and its file are named, before any work
    with pytest.raises(ValueError, match="allow_random") as err:
        evaluate_reconstructions(recon, target)
    for name in NETWORKS:
        assert NETWORKS[name].weights_file in str(err.value)
    with pytest.raises(ValueError, match="alexnet-owt-7be5be79.pth"):
        FeatureExtractor("alexnet")
    missing = tmp_path / "nowhere" / "inception.pth"
    with pytest.raises(FileNotFoundError, match="inception_v3_google-0cc3c7bd.pth") as err:
        evaluate_reconstructions(recon, target, metrics=("inception",), networks={"inception": missing})
    assert str(missing) in str(err.value)
    with pytest.raises(FileNotFoundError, match="swav_800ep_pretrain"):
        FeatureExtractor("swav", tmp_path)  # a folder, not a file
    with pytest.raises(FileNotFoundError, match="vit_large_patch14_clip_224.openai"):
        FeatureExtractor("clip", tmp_path / "open_clip_pytorch_model.bin")


@pytest.mark.slow
def test_full_size_clip_random_weights(images):
    recon, _ = images
    ext = FeatureExtractor("clip", allow_random=True, verbose="error")
    assert ext.extract(recon[:2])["encode_image"].shape == (2, 768)
