"""Tests of the COCO-caption metrics (BLEU, ROUGE-L, CIDEr, METEOR, SPICE), CLIP-S and their CIs."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest

from neurodecode.tasks import caption_metrics as cm
from neurodecode.tasks.caption_metrics import (
    CaptionScores,
    caption_metric_availability,
    compute_bleu,
    compute_cider,
    compute_clip_score,
    compute_ref_clip_score,
    compute_rouge_l,
    evaluate_captions,
    tokenize_captions,
)

HAS_PYCOCO = importlib.util.find_spec("pycocoevalcap") is not None
AVAIL = caption_metric_availability()
requires_pycoco = pytest.mark.skipif(not HAS_PYCOCO, reason="pycocoevalcap is not installed")

VOCAB = ["a", "an", "the", "man", "woman", "dog", "cat", "sitting", "on", "top", "of", "table", "red", "blue",
         "street", "car", "bus", "riding", "wave"]


def _random_corpus(n_images, seed, *, allow_empty=False):
    rng = np.random.default_rng(seed)

    def sent(lo):
        return " ".join(rng.choice(VOCAB, int(rng.integers(lo, 14))))

    cands = [sent(0 if allow_empty else 1) for _ in range(n_images)]
    refs = [[sent(1) for _ in range(int(rng.integers(1, 6)))] for _ in range(n_images)]
    return cands, refs


# --------------------------------------------------------------------------- by hand
def test_bleu1_by_hand():
    # 4-word candidate, 6-word reference: "the" and "cat" match -> p1 = 2/4; BP = exp(1 - 6/4)
    corpus, per = compute_bleu(["the cat sat down"], [["the cat is on the mat"]])
    assert corpus[0] == pytest.approx(0.5 * math.exp(1 - 6 / 4), rel=1e-8)
    assert per[0, 0] == pytest.approx(corpus[0], rel=1e-12)
    assert corpus[3] < 1e-6  # no 4-gram match


def test_bleu_clipping_and_closest_reference_length():
    # "the the the the" vs "the cat": "the" clipped to 1 match -> p1 = 1/4; ref lengths 2 and 4:
    # the closest to 4 is 4 -> no brevity penalty
    corpus, _ = compute_bleu(["the the the the"], [["the cat", "a cat on mat"]])
    assert corpus[0] == pytest.approx(0.25, rel=1e-8)
    # ties between reference lengths (3 and 5 for a 4-word candidate) pick the shorter: no penalty
    corpus, _ = compute_bleu(["a b c d"], [["a b c", "a b c d e"]])
    assert corpus[0] == pytest.approx(1.0, rel=1e-8)
    assert corpus[1] == pytest.approx(1.0, rel=1e-8)


def test_bleu_is_corpus_level_not_mean_of_images():
    cands = ["a man riding", "dog"]
    refs = [["a man riding a wave"], ["a dog"]]
    corpus, per = compute_bleu(cands, refs)
    # corpus BLEU-1: 4 matches / 4 words, BP exp(1 - 7/4)
    assert corpus[0] == pytest.approx(math.exp(1 - 7 / 4), rel=1e-8)
    assert corpus[0] != pytest.approx(per[:, 0].mean())


def test_rouge_l_by_hand():
    # LCS("a man riding a horse", "a man is riding a brown horse") = 5; P = 5/5, R = 5/7
    mean, _ = compute_rouge_l(["a man riding a horse"], [["a man is riding a brown horse", "dogs"]])
    p, r, b2 = 1.0, 5 / 7, 1.2 ** 2
    assert mean == pytest.approx((1 + b2) * p * r / (r + b2 * p), rel=1e-12)
    assert compute_rouge_l(["x y"], [["a b"]])[0] == 0.0


def test_cider_by_hand():
    # two images, each candidate equals its only reference; n-grams occur in one image each:
    # cosine 1 for unigrams and bigrams, no 3/4-grams -> mean over n = 0.5, x10 = 5
    mean, per = compute_cider(["a b", "c d"], [["a b"], ["c d"]])
    np.testing.assert_allclose(per, [5.0, 5.0], rtol=1e-12)
    # n-grams found in every image's references have idf 0 -> CIDEr 0
    mean, _ = compute_cider(["a dog", "a dog"], [["a dog"], ["a dog"]])
    assert mean == 0.0
    # length penalty: same n-grams, one extra word lowers the score
    better = compute_cider(["a b c", "x y z"], [["a b c"], ["x y z"]])[1][0]
    longer = compute_cider(["a b c q", "x y z"], [["a b c"], ["x y z"]])[1][0]
    assert longer < better


def test_clip_scores_by_hand():
    img = np.array([[1.0, 0.0], [1.0, 0.0]])
    cand = np.array([[1.0, 1.0], [-1.0, 0.2]])
    mean, per = compute_clip_score(img, cand)
    np.testing.assert_allclose(per, [2.5 / math.sqrt(2), 0.0])
    assert mean == pytest.approx(2.5 / math.sqrt(2) / 2)
    refs = [np.array([[0.0, 1.0], [1.0, 1.0]]), np.array([[1.0, 0.0]])]
    mean, per = compute_ref_clip_score(img, cand, refs)
    a, b = 2.5 / math.sqrt(2), 1.0  # best reference is identical to the candidate
    assert per[0] == pytest.approx(2 * a * b / (a + b))
    assert per[1] == 0.0  # CLIP-S 0 and negative text cosine (clipped to 0)
    # a 3-D reference array is accepted too
    _, per3 = compute_ref_clip_score(img, cand, np.stack([refs[0], np.repeat(refs[1], 2, axis=0)]))
    np.testing.assert_allclose(per3, per)


def test_python_tokenizer_follows_ptb_rules():
    out = tokenize_captions([
        "A dog's toy isn't on the table, it's under the chair!",
        "Two people (a man and a woman) walk.",
        "Mr. Smith went to the U.S. yesterday.",
        "There are 3.5 apples and 1,000 oranges... maybe.",
        "The cat can't see; it won't come out.",
        'A cake that says "Happy Birthday".',
        "A black-and-white photo -- 50% off at the #1 store for $5",
    ], tokenizer="python")
    assert out == [
        "a dog 's toy is n't on the table it 's under the chair",
        "two people -lrb- a man and a woman -rrb- walk",
        "mr. smith went to the u.s. yesterday",
        "there are 3.5 apples and 1,000 oranges maybe",
        "the cat ca n't see it wo n't come out",
        "a cake that says happy birthday",
        "a black-and-white photo 50 % off at the # 1 store for $ 5",
    ]
    assert tokenize_captions(["Already tokenised ."], tokenizer="none") == ["Already tokenised ."]
    with pytest.raises(TypeError, match="not one string"):
        tokenize_captions("a caption")


PTB_CASES = [
    "A man riding a wave on top of a surfboard.", "Two dogs play in the grass!",
    "A bathroom with a toilet, sink, and shower.  ", "the man is   skiing down the hill",
    "A clock tower with a clock on it's face", "an 'old' train on the tracks",
    "Teddy bears sitting on a bench...", "a couple of men are playing frisbee--outside",
    "They're going; we'll see. I'd say I'm fine, you've won.", "a [red] {blue} bus",
    "A kitchen with a stove, a sink & a refrigerator", "a plate of food with broccoli/carrots on it",
    "the dogs' bowls are empty", "time 10:30am 3:00 p.m.", "gotta lemme gimme cannot gonna wanna",
    "it\u2019s a \u201cquoted\u201d word \u2014 dash", "a. b. c. d", "A MAN IN CAPS.", "2.5.", "",
    "A man in a red shirt.A woman in blue.", "a man,a woman", "ten o'clock? yes!", "ok!? sure",
]


@pytest.mark.skipif(AVAIL["ptb"] is not None, reason=f"Stanford PTBTokenizer unavailable: {AVAIL['ptb']}")
def test_python_tokenizer_matches_the_stanford_jar():
    assert tokenize_captions(PTB_CASES, tokenizer="python") == tokenize_captions(PTB_CASES, tokenizer="ptb")


# --------------------------------------------------------------------------- pycocoevalcap
@requires_pycoco
@pytest.mark.parametrize("seed,n_images,allow_empty", [(0, 40, False), (1, 1, False), (2, 25, True)])
def test_equal_to_pycocoevalcap(seed, n_images, allow_empty):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    cands, refs = _random_corpus(n_images, seed, allow_empty=allow_empty)
    gts = {i: r for i, r in enumerate(refs)}
    res = {i: [c] for i, c in enumerate(cands)}
    bleu, bleu_per = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, rouge_per = Rouge().compute_score(gts, res)
    cider, cider_per = Cider().compute_score(gts, res)

    ours_bleu, ours_bleu_per = compute_bleu(cands, refs)
    np.testing.assert_allclose(ours_bleu, bleu, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours_bleu_per, np.array(bleu_per).T, rtol=0, atol=1e-9)
    ours_rouge, ours_rouge_per = compute_rouge_l(cands, refs)
    assert abs(ours_rouge - rouge) <= 1e-9
    np.testing.assert_allclose(ours_rouge_per, rouge_per, rtol=0, atol=1e-9)
    ours_cider, ours_cider_per = compute_cider(cands, refs)
    assert abs(ours_cider - cider) <= 1e-9
    np.testing.assert_allclose(ours_cider_per, cider_per, rtol=0, atol=1e-9)

    scores = evaluate_captions(cands, refs, metrics=["bleu", "rouge_l", "cider"], tokenizer="none", n_boot=0)
    for k in range(4):
        assert abs(scores[f"bleu{k + 1}"] - bleu[k]) <= 1e-9
    assert abs(scores["ROUGE-L"] - rouge) <= 1e-9
    assert abs(scores["cider"] - cider) <= 1e-9


@pytest.mark.slow
@pytest.mark.skipif(AVAIL["meteor"] is not None, reason=f"METEOR unavailable: {AVAIL['meteor']}")
def test_meteor_through_java():
    cands = ["a man surfing a wave", "a dog in the grass"]
    refs = [["a man riding a wave on top of a surfboard", "a surfer rides a wave"],
            ["two dogs play in the grass", "dogs playing"]]
    scores = evaluate_captions(cands, refs, metrics=["meteor"], tokenizer="none", n_boot=50)
    assert 0.1 < scores["meteor"] < 0.6
    lo, hi = scores.metrics["meteor"]["ci_low"], scores.metrics["meteor"]["ci_high"]
    assert lo <= scores["meteor"] <= hi


# --------------------------------------------------------------------------- evaluate_captions
def _embeddings(n, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.standard_normal((n, dim))
    cand = img + 0.7 * rng.standard_normal((n, dim))
    refs = [img[i] + rng.standard_normal((3, dim)) for i in range(n)]
    return img, cand, refs


def test_evaluate_captions_values_cis_and_export():
    cands, refs = _random_corpus(30, 5)
    img, cand, ref_emb = _embeddings(30)
    scores = evaluate_captions(cands, refs, image_embeddings=img, candidate_embeddings=cand,
                               reference_embeddings=ref_emb, metrics=["bleu", "rouge_l", "cider", "clip_s",
                                                                      "refclip_s"],
                               tokenizer="python", n_boot=300, random_state=1)
    assert list(scores.metrics) == ["bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider", "clip_s",
                                    "refclip_s"]
    for name, d in scores.metrics.items():
        assert d["ci_low"] <= d["value"] <= d["ci_high"], name
    assert scores["clip_s"] == pytest.approx(compute_clip_score(img, cand)[0])
    # CIDEr CI: bootstrap of the per-image scores with the idf of the full set
    counts = cm.bootstrap_counts(30, 300, np.random.default_rng(1))
    reps = counts @ scores.per_image["cider"] / 30
    assert scores.metrics["cider"]["ci_low"] == pytest.approx(np.quantile(reps, 0.025))
    # BLEU replicates are corpus BLEU of the resampled corpus
    b = 7
    idx = np.repeat(np.arange(30), counts[b])
    toks = tokenize_captions(cands, tokenizer="python")
    rtoks = [tokenize_captions(r, tokenizer="python") for r in refs]
    corpus_b, _ = compute_bleu([toks[i] for i in idx], [rtoks[i] for i in idx])
    np.testing.assert_allclose(scores.replicates[b, :4], corpus_b, rtol=1e-9)
    # same seed, same CIs
    again = evaluate_captions(cands, refs, metrics=["bleu", "cider"], tokenizer="python", n_boot=300,
                              random_state=1)
    assert again.metrics["cider"] == scores.metrics["cider"]

    frame = scores.to_frame(percent=True)
    assert frame.loc[frame.metric == "cider", "value"].item() == pytest.approx(100 * scores["cider"])
    restored = CaptionScores.from_dict(json.loads(json.dumps(scores.to_dict())))
    assert restored.metrics == scores.metrics
    assert "CIDEr" in repr(scores)
    assert "idf" in scores.description


def test_unavailable_metrics_are_reported_with_reason(monkeypatch):
    fake = {"ptb": "no java", "meteor": "no java (install a JRE)", "spice": "CoreNLP jars missing"}
    monkeypatch.setattr(cm, "caption_metric_availability", lambda: dict(fake))
    cands, refs = _random_corpus(5, 3)
    scores = evaluate_captions(cands, refs, tokenizer="auto", n_boot=0)
    assert scores.unavailable["meteor"] == fake["meteor"]
    assert scores.unavailable["spice"] == fake["spice"]
    assert "needs image_embeddings" in scores.unavailable["clip_s"]
    assert scores.protocol["tokenizer"] == "python-ptb"  # "auto" fell back to Python
    assert np.isnan(scores.metrics["cider"]["ci_low"])  # n_boot=0
    with pytest.raises(KeyError, match="no java"):
        scores["meteor"]
    frame = scores.to_frame()
    assert not frame.loc[frame.metric == "spice", "available"].item()
    with pytest.raises(RuntimeError, match="METEOR was requested"):
        evaluate_captions(cands, refs, metrics=["meteor"], n_boot=0)
    with pytest.raises(RuntimeError, match="tokenizer='python'"):
        tokenize_captions(["a"], tokenizer="ptb")


def test_availability_without_pycocoevalcap_or_java(monkeypatch):
    monkeypatch.setattr(cm, "_pycoco_dir", lambda: None)
    assert all("not installed" in why for why in caption_metric_availability().values())
    monkeypatch.undo()
    if HAS_PYCOCO:
        monkeypatch.setattr(cm, "_java", lambda: None)
        assert all("java" in why for why in caption_metric_availability().values())
        # "auto" then tokenises in Python
        assert tokenize_captions(["A dog."], tokenizer="auto") == ["a dog"]


def test_clip_metrics_from_an_encoder():
    class FakeEncoder:
        def __init__(self):
            self.seen = []

        def embed_texts(self, texts, outputs=("pooled",)):
            self.seen.extend(texts)
            return {"pooled": np.array([[len(t), 1.0 + t.count("dog")] for t in texts], dtype=np.float32)}

    enc = FakeEncoder()
    cands = ["a dog", "a cat"]
    refs = [["a dog runs"], ["a cat sits", "the cat"]]
    img = np.array([[12.0, 2.0], [12.0, 1.0]])
    scores = evaluate_captions(cands, refs, image_embeddings=img, encoder=enc,
                               metrics=["clip_s", "refclip_s"], n_boot=0)
    assert enc.seen[0] == "A photo depicts a dog"
    expected = compute_clip_score(img, np.array([[21.0, 2.0], [21.0, 1.0]]))[0]
    assert scores["clip_s"] == pytest.approx(expected)
    assert "refclip_s" in scores.metrics


def test_input_validation():
    with pytest.raises(ValueError, match="aligned"):
        compute_bleu(["a"], [["a"], ["b"]])
    with pytest.raises(ValueError, match="no reference"):
        compute_rouge_l(["a"], [[]])
    with pytest.raises(ValueError, match="Invalid value"):
        evaluate_captions(["a"], [["a"]], metrics=["bertscore"])
    with pytest.raises(ValueError, match="same shape"):
        compute_clip_score(np.ones((2, 3)), np.ones((3, 3)))
    # a bare string reference is one caption
    assert compute_bleu(["a b"], ["a b"])[0][0] == pytest.approx(1.0)
