"""Caption metrics with the COCO-caption protocol used by BrainHub (UMBRAE), plus CLIP-S / RefCLIP-S.

BrainHub scores decoded captions of the 982 NSD test images against their COCO captions with
`pycocoevalcap <https://github.com/salaniz/pycocoevalcap>`_ (``Bleu(4)``, ``Meteor()``,
``Rouge()``, ``Cider()``, ``Spice()`` on captions run through its ``PTBTokenizer``) and with
CLIP-S / RefCLIP-S (Hessel et al., 2021, ViT-B/32, the prompt ``"A photo depicts"``). Its tables
multiply every value by 100. This module follows that protocol:

- **Tokenisation** (:func:`tokenize_captions`): Stanford's PTBTokenizer (``-lowerCase
  -preserveLines``) through the jar that ships with pycocoevalcap when it and Java are
  installed; otherwise a pure-Python re-implementation of the same rules. Both drop the
  punctuation tokens pycocoevalcap drops (:data:`PUNCTUATIONS`). The Python tokenizer agrees with
  the jar on ordinary captions; it differs on rare forms (see the function's Notes).
- **BLEU-1..4** (:func:`compute_bleu`): corpus-level BLEU exactly as pycocoevalcap's ``Bleu``:
  clipped n-gram counts summed over images, the brevity penalty from the summed "closest"
  reference lengths, and its smoothing constants (1e-15, 1e-9).
- **ROUGE-L** (:func:`compute_rouge_l`): per image, the LCS F-measure with β = 1.2 using the
  best precision and the best recall over the references; the value is the mean over images.
- **CIDEr** (:func:`compute_cider`): pycocoevalcap's ``Cider`` (the CIDEr-D variant used in COCO
  evaluation): TF-IDF n-gram vectors (n = 1..4) with document frequencies from the
  *references of the evaluated set*, clipped candidate counts, a Gaussian length penalty
  (σ = 6), the mean over n and over references, times 10.
- **METEOR** and **SPICE** (:func:`compute_meteor`, :func:`compute_spice`): only through
  pycocoevalcap's Java programs (METEOR 1.5 and SPICE 1.0). Without Java, or for SPICE without
  the Stanford CoreNLP 3.6.0 jars that pycocoevalcap downloads on first use, they are reported
  unavailable with the reason (:func:`caption_metric_availability`).
- **CLIP-S** (:func:`compute_clip_score`): ``2.5 * max(cos(image, caption), 0)`` averaged over
  images; **RefCLIP-S** (:func:`compute_ref_clip_score`): per image the harmonic mean of CLIP-S
  and the highest cosine between the candidate and its reference captions.

:func:`evaluate_captions` computes them all with bootstrap confidence intervals (resampling
images) and a shuffled-pairing baseline (each caption against another image's references),
and returns a :class:`CaptionScores`.
"""

from __future__ import annotations

import itertools
import math
import re
import shutil
import subprocess
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..utils import (
    check_option,
    check_random_state,
    ensure_finite,
    fill_doc,
    json_float,
    logger,
    to_jsonable,
    verbose,
    warn,
)
from .bootstrap import bootstrap_counts, check_ci, percentile_interval, random_derangement

__all__ = [
    "PUNCTUATIONS", "CaptionScores", "caption_metric_availability", "compute_bleu", "compute_cider",
    "compute_clip_score", "compute_meteor", "compute_ref_clip_score", "compute_rouge_l", "compute_spice",
    "evaluate_captions", "tokenize_captions",
]

#: Tokens pycocoevalcap's PTBTokenizer removes after tokenising (compared exactly, so the
#: lower-cased bracket escapes ``-lrb-`` / ``-rrb-`` that ``-lowerCase`` produces are *kept*).
PUNCTUATIONS = ("''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-",
                "--", "...", ";")

#: Metric keys in report order, with their display labels.
METRIC_LABELS = {
    "bleu1": "BLEU-1", "bleu2": "BLEU-2", "bleu3": "BLEU-3", "bleu4": "BLEU-4", "meteor": "METEOR",
    "rouge_l": "ROUGE-L", "cider": "CIDEr", "spice": "SPICE", "clip_s": "CLIP-S", "refclip_s": "RefCLIP-S",
}
_TEXT_METRICS = ("bleu", "meteor", "rouge_l", "cider", "spice")
_METRIC_GROUPS = _TEXT_METRICS + ("clip_s", "refclip_s")
#: Derangements averaged in the shuffled-pairing baseline.
N_DERANGEMENTS = 5
#: Metrics without a shuffled baseline: each would need another run of its Java program.
_NOT_SHUFFLED = ("meteor", "spice")
_TOKENIZERS = ("auto", "ptb", "python", "none")

_PTB_JAR = "stanford-corenlp-3.4.1.jar"
_SPICE_CORENLP_JAR = "stanford-corenlp-3.6.0.jar"


# --------------------------------------------------------------------------- availability
def _pycoco_dir() -> Path | None:
    """Folder of the installed ``pycocoevalcap`` package (None when not importable)."""
    try:
        import pycocoevalcap
    except ImportError:
        return None
    paths = list(getattr(pycocoevalcap, "__path__", []))
    return Path(paths[0]) if paths else None


def _java() -> str | None:
    return shutil.which("java")


def caption_metric_availability() -> dict[str, str | None]:
    """Which Java-based parts of the protocol can run here, and why not.

    Returns
    -------
    availability : dict
        ``{"ptb": ..., "meteor": ..., "spice": ...}``: ``None`` when available, else the
        reason and the fix, as a sentence.
    """
    root = _pycoco_dir()
    java = _java()
    out: dict[str, str | None] = {}
    base = None
    if root is None:
        base = "pycocoevalcap is not installed (pip install 'neurodecode[generation]')"
    elif java is None:
        base = ("no `java` executable on PATH (install a Java runtime, e.g. `apt-get install "
                "default-jre-headless` or `conda install -c conda-forge openjdk`)")
    checks = {
        "ptb": ("tokenizer", _PTB_JAR),
        "meteor": ("meteor", "meteor-1.5.jar"),
        "spice": ("spice", "spice-1.0.jar"),
    }
    for name, (sub, jar) in checks.items():
        if base is not None:
            out[name] = base
            continue
        path = root / sub / jar  # type: ignore[operator]
        out[name] = None if path.is_file() else f"{path} is missing (reinstall pycocoevalcap)"
    table = root / "meteor" / "data" / "paraphrase-en.gz" if root is not None else None
    if out["meteor"] is None and table is not None and not table.is_file():
        out["meteor"] = ("METEOR's paraphrase table meteor/data/paraphrase-en.gz is missing "
                         "(reinstall pycocoevalcap)")
    if out["spice"] is None and root is not None:
        lib = root / "spice" / "lib"
        models = _SPICE_CORENLP_JAR.replace(".jar", "-models.jar")
        if not ((lib / _SPICE_CORENLP_JAR).is_file() and (lib / models).is_file()):
            out["spice"] = (
                f"SPICE needs {lib / _SPICE_CORENLP_JAR} (and its -models jar), which pycocoevalcap "
                "downloads from nlp.stanford.edu on first use; it is absent and nothing is downloaded "
                "here. Run `python -c \"from pycocoevalcap.spice.get_stanford_models import "
                "get_stanford_models; get_stanford_models()\"` once on a machine with network access")
    return out


# --------------------------------------------------------------------------- tokenisation
#: Abbreviations whose final period Stanford's PTBTokenizer 3.4.1 keeps (found by running the jar).
_ABBREVIATIONS = frozenset({
    "a.m", "adj", "adm", "adv", "al", "ala", "apr", "ariz", "assn", "assoc", "asst", "attys", "aug", "ave",
    "bldg", "blvd", "brig", "bros", "calif", "capt", "cf", "cie", "cmdr", "co", "col", "colo", "comdr",
    "conn", "corp", "cpl", "ct", "dak", "dec", "dept", "det", "dr", "drs", "e.g", "ens", "esq", "etc",
    "ext", "feb", "fla", "ft", "ga", "gen", "gov", "hon", "i.e", "inc", "ind", "insp", "jan", "jr", "jul",
    "jun", "kan", "kans", "ky", "lt", "ltd", "maj", "mar", "md", "messrs", "mfg", "mich", "minn", "mlle",
    "mme", "mo", "mont", "mr", "mrs", "ms", "msgr", "mt", "neb", "nev", "nov", "oct", "okla", "est", "p.m",
    "penn", "pfc", "ph", "ph.d", "plc", "pres", "prof", "pvt", "rd", "rep", "reps", "rev", "rt", "sen",
    "sens", "sep", "sept", "sfc", "sgt", "sq", "sr", "st", "supt", "tenn", "u.k", "u.n", "u.s", "univ",
    "va", "vs", "vt", "wis", "wisc", "wyo"
})
_SPLIT_WORDS = {"cannot": ["can", "not"], "gonna": ["gon", "na"], "gotta": ["got", "ta"],
                "wanna": ["wan", "na"], "lemme": ["lem", "me"], "gimme": ["gim", "me"],
                "y'all": ["y'", "all"]}
_ESCAPES = frozenset({"-lrb-", "-rrb-", "-lsb-", "-rsb-", "-lcb-", "-rcb-"})
_CONTRACTION = re.compile(r"^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$")
_ACRONYM = re.compile(r"^(?:[^\W\d_]\.)+[^\W\d_]$")
_UNICODE = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2014": " -- ",
                          "\u2013": " -- ", "\u00a0": " "})
_BRACKETS = {"(": " -lrb- ", ")": " -rrb- ", "[": " -lsb- ", "]": " -rsb- ", "{": " -lcb- ", "}": " -rcb- "}
_SPACE_OUT = [
    (re.compile(r'"'), " "),                                   # `` and '' are removed anyway
    (re.compile(r"[!?]+"), r" \g<0> "),
    (re.compile(r"[&+=*~<>|^%$#;`]"), r" \g<0> "),
    (re.compile(r"(?<!\d):|:(?!\d)"), " : "),
    (re.compile(r"(?<!\d),|,(?!\d)"), " , "),
    (re.compile(r"-{2,}"), " -- "),
    (re.compile(r"\.{2,}"), " ... "),
    (re.compile(r"(\d:\d\d)([^\W\d_]+)"), r"\1 \2"),           # 10:30am -> 10:30 am
]


def _split_token(tok: str) -> list[str]:
    """Split one whitespace-delimited, lower-cased token the way PTBTokenizer does (approximately)."""
    if tok in _SPLIT_WORDS:
        return list(_SPLIT_WORDS[tok])
    if tok in _ESCAPES:
        return [tok]
    head: list[str] = []
    tail: list[str] = []
    while True:  # leading quotes and hyphens
        if len(tok) > 1 and tok[0] == "-" and tok not in ("--",):
            head.append("-")
            tok = tok[1:]
        elif len(tok) > 1 and tok[0] == "'" and not _CONTRACTION.match("x" + tok) and tok != "'":
            head.append("'")
            tok = tok[1:]
        else:
            break
    while len(tok) > 1:  # trailing period, quote, hyphen
        if tok.endswith(".") and not tok.endswith(".."):
            word = tok[:-1]
            if word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()) or _ACRONYM.match(word):
                break
            tail.insert(0, ".")
            tok = word
        elif tok.endswith("'") and not tok.endswith("n't"):
            tail.insert(0, "'")
            tok = tok[:-1]
        elif tok.endswith("-"):
            tail.insert(0, "-")
            tok = tok[:-1]
        else:
            break
    body = [tok]
    if tok in _SPLIT_WORDS:
        body = list(_SPLIT_WORDS[tok])
    else:
        m = _CONTRACTION.match(tok)
        if m and m.group(1) not in ("", "'"):
            body = [m.group(1), m.group(2)]
    return head + body + tail


def _ptb_python_one(caption: str) -> str:
    s = str(caption).replace("\n", " ").translate(_UNICODE).lower()
    for char, rep in _BRACKETS.items():
        s = s.replace(char, rep)
    for pattern, rep in _SPACE_OUT:
        s = pattern.sub(rep, s)
    tokens = [t for raw in s.split() for t in _split_token(raw)]
    return " ".join(t for t in tokens if t and t not in PUNCTUATIONS)


def _ptb_java(captions: list[str]) -> list[str]:
    """Run pycocoevalcap's Stanford PTBTokenizer jar (one caption per line), drop PUNCTUATIONS."""
    jar = _pycoco_dir() / "tokenizer" / _PTB_JAR  # type: ignore[operator]
    text = "\n".join(str(c).replace("\r", " ").replace("\n", " ") for c in captions)
    with tempfile.TemporaryDirectory(prefix="neurodecode_ptb_") as tmp:
        path = Path(tmp) / "captions.txt"
        path.write_text(text, encoding="utf-8")
        cmd = [_java() or "java", "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer",
               "-preserveLines", "-lowerCase", "-encoding", "utf-8", str(path)]
        proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"Stanford PTBTokenizer failed (exit {proc.returncode}): "
                           f"{proc.stderr.decode('utf-8', 'replace')[-800:]}")
    lines = proc.stdout.decode("utf-8").split("\n")
    if len(lines) > len(captions) and not any(lines[len(captions):]):
        lines = lines[:len(captions)]
    if len(lines) != len(captions):
        raise RuntimeError(f"Stanford PTBTokenizer returned {len(lines)} lines for {len(captions)} captions")
    return [" ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS) for line in lines]


def _resolve_tokenizer(tokenizer: str) -> str:
    check_option("tokenizer", tokenizer, _TOKENIZERS)
    if tokenizer == "auto":
        return "ptb" if caption_metric_availability()["ptb"] is None else "python"
    if tokenizer == "ptb":
        reason = caption_metric_availability()["ptb"]
        if reason is not None:
            raise RuntimeError(f"tokenizer='ptb' needs Stanford's PTBTokenizer: {reason}. "
                               "Use tokenizer='python' (the pure-Python equivalent) instead.")
    return tokenizer


@verbose
@fill_doc
def tokenize_captions(captions: Sequence[str], *,
                      tokenizer: Literal["auto", "ptb", "python", "none"] = "auto",
                      verbose: bool | str | int | None = None) -> list[str]:
    """Tokenise captions as pycocoevalcap's ``PTBTokenizer`` does: lower-cased, punctuation dropped.

    Parameters
    ----------
    captions : sequence of str
        Raw captions.
    tokenizer : ``"auto"`` | ``"ptb"`` | ``"python"`` | ``"none"``
        ``"ptb"``: Stanford PTBTokenizer 3.4.1 (the jar shipped with pycocoevalcap; needs
        Java); ``"python"``: the pure-Python re-implementation; ``"auto"``: ``"ptb"`` when
        available, else ``"python"``; ``"none"``: return the captions unchanged (already
        tokenised).
    %(verbose)s

    Returns
    -------
    tokenized : list of str
        One string per caption, tokens joined by single spaces.

    Notes
    -----
    The jar runs with ``-lowerCase -preserveLines``. It splits punctuation, clitics
    (``dog's`` → ``dog 's``, ``isn't`` → ``is n't``, ``cannot`` → ``can not``), keeps
    abbreviations (``mr.``, ``u.s.``, single letters such as ``a.``), numbers (``3.5``,
    ``1,000``, ``10:30``) and hyphenated words, and writes brackets as ``-lrb-`` ... Afterwards
    the tokens in :data:`PUNCTUATIONS` are removed. Because that list holds the escapes in
    upper case (``-LRB-``) and the jar lower-cases them, the COCO protocol *keeps*
    ``-lrb-`` / ``-rrb-`` tokens; both tokenizers here do the same.

    The Python tokenizer reproduces these rules but not the whole JFlex grammar of the jar.
    Known differences (all rare in captions): the jar splits ``rock'n'roll`` into
    ``rock 'n' roll`` and ``'tis`` into ``'t is``, handles runs of periods inside a token
    (``x..y``) and inch marks (``5'2"``) in its own way, and may know abbreviations beyond
    the list used here (which was read off the jar's output). The jar also looks across
    lines: an abbreviation or single letter with a period at the *end* of a caption (``the
    u.s.``, ``a.``) keeps its period unless the next caption starts with a capital letter, so
    its output for one caption can depend on the next one; the Python tokenizer always keeps
    the period (each caption is tokenised on its own). Scores from the two
    tokenizers are therefore equal on typical COCO captions and may differ slightly otherwise;
    the tokenizer used is recorded in :attr:`CaptionScores.protocol`.
    """
    if isinstance(captions, str):
        raise TypeError("captions must be a sequence of strings, not one string; wrap it in a list")
    captions = ["" if c is None else str(c) for c in captions]
    kind = _resolve_tokenizer(tokenizer)
    logger.debug("Tokenising %d captions with the %s tokenizer", len(captions), kind)
    if kind == "none" or not captions:
        return list(captions)
    if kind == "ptb":
        return _ptb_java(captions)
    return [_ptb_python_one(c) for c in captions]


# --------------------------------------------------------------------------- inputs
def _check_captions(candidates: Sequence[str],
                    references: Sequence[Any]) -> tuple[list[str], list[list[str]]]:
    if isinstance(candidates, str):
        raise TypeError("candidates must be a sequence of strings (one per image), not one string")
    cands = ["" if c is None else str(c) for c in candidates]
    if isinstance(references, str):
        raise TypeError("references must be a sequence (one entry per image) of lists of strings")
    refs = []
    for i, r in enumerate(references):
        r = [r] if isinstance(r, str) else [str(x) for x in r]
        if not r:
            raise ValueError(f"image {i} has no reference caption; every image needs at least one")
        refs.append(r)
    if len(cands) != len(refs):
        raise ValueError(f"candidates and references must be aligned (one entry per image), got "
                         f"{len(cands)} candidates and {len(refs)} reference lists")
    if not cands:
        raise ValueError("no captions to score (candidates is empty)")
    return cands, refs


def _ngram_counts(words: list[str], n: int) -> dict[tuple[str, ...], int]:
    """n-gram counts for k = 1..n, in the order pycocoevalcap's ``precook`` inserts them."""
    counts: dict[tuple[str, ...], int] = defaultdict(int)
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i:i + k])] += 1
    return counts


# --------------------------------------------------------------------------- BLEU
_BLEU_TINY = 1e-15
_BLEU_SMALL = 1e-9


def _bleu_stats(cands: list[str], refs: list[list[str]], n: int) -> dict[str, np.ndarray]:
    """Per-image BLEU sufficient statistics (clipped matches, guesses, lengths)."""
    m = len(cands)
    correct = np.zeros((m, n))
    guess = np.zeros((m, n))
    testlen = np.zeros(m)
    reflen = np.zeros(m)
    for i, (cand, rs) in enumerate(zip(cands, refs)):
        maxcounts: dict[tuple[str, ...], int] = {}
        lens = []
        for r in rs:
            words = r.split()
            lens.append(len(words))
            for gram, c in _ngram_counts(words, n).items():
                maxcounts[gram] = max(maxcounts.get(gram, 0), c)
        words = cand.split()
        tl = len(words)
        testlen[i] = tl
        reflen[i] = min((abs(ln - tl), ln) for ln in lens)[1]  # "closest", shorter on ties
        guess[i] = [max(0, tl - k + 1) for k in range(1, n + 1)]
        for gram, c in _ngram_counts(words, n).items():
            correct[i, len(gram) - 1] += min(maxcounts.get(gram, 0), c)
    return {"correct": correct, "guess": guess, "testlen": testlen, "reflen": reflen}


def _bleu_scalar(correct: Sequence[float], guess: Sequence[float], testlen: float, reflen: float,
                 n: int) -> list[float]:
    """pycocoevalcap's BLEU formula on (summed) statistics, in plain floats (same operation order)."""
    out = []
    bleu = 1.0
    for k in range(n):
        bleu *= (float(correct[k]) + _BLEU_TINY) / (float(guess[k]) + _BLEU_SMALL)
        out.append(bleu ** (1.0 / (k + 1)))
    ratio = (float(testlen) + _BLEU_TINY) / (float(reflen) + _BLEU_SMALL)
    if ratio < 1:
        out = [b * math.exp(1 - 1 / ratio) for b in out]
    return out


def _bleu_vector(correct: np.ndarray, guess: np.ndarray, testlen: np.ndarray, reflen: np.ndarray,
                 n: int) -> np.ndarray:
    """The same formula for many sets of summed statistics at once; shape (n_sets, n)."""
    frac = (correct + _BLEU_TINY) / (guess + _BLEU_SMALL)
    prod = np.cumprod(frac, axis=1)
    out = prod ** (1.0 / np.arange(1, n + 1))
    ratio = (testlen + _BLEU_TINY) / (reflen + _BLEU_SMALL)
    with np.errstate(divide="ignore", over="ignore"):
        bp = np.where(ratio < 1, np.exp(1 - 1 / np.where(ratio < 1, ratio, 1.0)), 1.0)
    return out * bp[:, None]


def compute_bleu(candidates: Sequence[str], references: Sequence[Sequence[str]], *,
                 n: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Corpus-level BLEU-1..n as pycocoevalcap's ``Bleu(n).compute_score`` (``option="closest"``).

    Parameters
    ----------
    candidates : sequence of str
        One *tokenised* caption per image (see :func:`tokenize_captions`); tokens are split
        on whitespace.
    references : sequence of sequence of str
        The tokenised reference captions of each image.
    n : int
        Highest n-gram order.

    Returns
    -------
    corpus : ndarray, shape (n,)
        BLEU-1 … BLEU-n of the whole set: clipped n-gram matches and candidate n-gram counts
        are summed over images, the geometric mean of the precisions up to order k is taken,
        and the brevity penalty ``exp(1 - r / c)`` (when ``c < r``) uses the summed candidate
        length ``c`` and the summed reference lengths ``r``, each the reference length closest
        to that image's candidate length (the shorter one on ties).
    per_image : ndarray, shape (n_images, n)
        The same formula applied to each image alone (pycocoevalcap's second output).
    """
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    n = int(n)
    cands, refs = _check_captions(candidates, references)
    stats = _bleu_stats(cands, refs, n)
    corpus = _bleu_scalar(stats["correct"].sum(0), stats["guess"].sum(0), stats["testlen"].sum(),
                          stats["reflen"].sum(), n)
    per = np.array([_bleu_scalar(stats["correct"][i], stats["guess"][i], stats["testlen"][i],
                                 stats["reflen"][i], n) for i in range(len(cands))])
    return np.asarray(corpus), per


# --------------------------------------------------------------------------- ROUGE-L
def _lcs_length(a: list[str], b: list[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, 1):
            cur[j] = prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1])
        prev = cur
    return prev[-1]


def compute_rouge_l(candidates: Sequence[str], references: Sequence[Sequence[str]], *,
                    beta: float = 1.2) -> tuple[float, np.ndarray]:
    """ROUGE-L as pycocoevalcap's ``Rouge().compute_score``.

    Parameters
    ----------
    candidates : sequence of str
        One tokenised caption per image; tokens are split on single spaces (as pycocoevalcap).
    references : sequence of sequence of str
        Tokenised references of each image.
    beta : float
        Weight of recall (1.2 in COCO evaluation).

    Returns
    -------
    mean : float
        The mean over images.
    per_image : ndarray, shape (n_images,)
        Per image, with ``P`` and ``R`` the highest LCS precision and the highest LCS recall
        over its references (each maximised separately):
        ``(1 + beta**2) * P * R / (R + beta**2 * P)``, or 0 when either is 0.
    """
    cands, refs = _check_captions(candidates, references)
    b2 = float(beta) ** 2
    scores = np.zeros(len(cands))
    for i, (cand, rs) in enumerate(zip(cands, refs)):
        tc = cand.split(" ")
        prec, rec = [], []
        for r in rs:
            tr = r.split(" ")
            lcs = _lcs_length(tr, tc)
            prec.append(lcs / float(len(tc)))
            rec.append(lcs / float(len(tr)))
        p, rr = max(prec), max(rec)
        scores[i] = ((1 + b2) * p * rr) / float(rr + b2 * p) if (p != 0 and rr != 0) else 0.0
    return float(np.mean(scores)), scores


# --------------------------------------------------------------------------- CIDEr
def compute_cider(candidates: Sequence[str], references: Sequence[Sequence[str]], *, n: int = 4,
                  sigma: float = 6.0) -> tuple[float, np.ndarray]:
    """CIDEr as pycocoevalcap's ``Cider().compute_score`` (the CIDEr-D of COCO evaluation).

    Parameters
    ----------
    candidates : sequence of str
        One tokenised caption per image.
    references : sequence of sequence of str
        Tokenised references of each image.
    n : int
        Highest n-gram order (4).
    sigma : float
        Width of the Gaussian length penalty (6).

    Returns
    -------
    mean : float
        The mean over images.
    per_image : ndarray, shape (n_images,)
        Per image: for each order k, the cosine between the candidate's and each reference's
        TF-IDF vectors of k-grams, with the candidate weights clipped at the reference
        weights, times ``exp(-delta**2 / (2 * sigma**2))``; averaged over k and over
        references, times 10.

    Notes
    -----
    The IDF is ``log(n_images) - log(max(1, df))`` with ``df`` the number of images whose
    references contain the n-gram: it comes from the evaluated set itself, so a score depends
    on which other images are scored with it. As in pycocoevalcap, ``delta`` is the difference
    in the number of *bigrams* of candidate and reference (their lengths minus one for
    non-empty captions).
    """
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    n = int(n)
    cands, refs = _check_captions(candidates, references)
    crefs = [[_ngram_counts(r.split(), n) for r in rs] for rs in refs]
    ctest = [_ngram_counts(c.split(), n) for c in cands]
    df: dict[tuple[str, ...], float] = defaultdict(float)
    for rs in crefs:
        for gram in {g for r in rs for g in r}:
            df[gram] += 1
    ref_len = np.log(float(len(crefs)))

    def vec(cnts):
        v: list[dict[tuple[str, ...], float]] = [defaultdict(float) for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for gram, tf in cnts.items():
            k = len(gram) - 1
            w = float(tf) * (ref_len - np.log(max(1.0, df.get(gram, 0.0))))
            v[k][gram] = w
            norm[k] += pow(w, 2)
            if k == 1:
                length += tf
        return v, [np.sqrt(x) for x in norm], length

    def sim(vh, vr, nh, nr, lh, lr):
        delta = float(lh - lr)
        val = np.array([0.0] * n)
        for k in range(n):
            for gram in vh[k]:
                r = vr[k].get(gram, 0.0)
                val[k] += min(vh[k][gram], r) * r
            if nh[k] != 0 and nr[k] != 0:
                val[k] /= nh[k] * nr[k]
            val[k] *= np.e ** (-(delta ** 2) / (2 * sigma ** 2))
        return val

    scores = []
    for test, rs in zip(ctest, crefs):
        vh, nh, lh = vec(test)
        score = np.array([0.0] * n)
        for r in rs:
            vr, nr, lr = vec(r)
            score += sim(vh, vr, nh, nr, lh, lr)
        s = np.mean(score)
        s /= len(rs)
        s *= 10.0
        scores.append(s)
    scores_arr = np.array(scores, dtype=float)
    return float(np.mean(scores_arr)), scores_arr


# --------------------------------------------------------------------------- Java metrics
def _require(metric: str) -> None:
    reason = caption_metric_availability()[metric]
    if reason is not None:
        raise RuntimeError(f"{METRIC_LABELS[metric]} is unavailable: {reason}.")


def _as_coco_dicts(cands: list[str], refs: list[list[str]]) -> tuple[dict, dict]:
    return ({i: list(r) for i, r in enumerate(refs)}, {i: [c] for i, c in enumerate(cands)})


def compute_meteor(candidates: Sequence[str],
                   references: Sequence[Sequence[str]]) -> tuple[float, np.ndarray]:
    """METEOR 1.5 through pycocoevalcap's ``Meteor`` (needs Java; about 10 s to start).

    Parameters
    ----------
    candidates : sequence of str
        One tokenised caption per image.
    references : sequence of sequence of str
        Tokenised references of each image.

    Returns
    -------
    corpus : float
        The jar's corpus-level score (from the summed alignment statistics of all images,
        as pycocoevalcap reports it; not the mean of the per-image scores).
    per_image : ndarray, shape (n_images,)
        The per-segment scores.

    Raises
    ------
    RuntimeError
        When pycocoevalcap, Java or the METEOR jar is missing (the message says which).
    """
    cands, refs = _check_captions(candidates, references)
    _require("meteor")
    from pycocoevalcap.meteor.meteor import Meteor

    gts, res = _as_coco_dicts(cands, refs)
    scorer = Meteor()
    try:
        score, per = scorer.compute_score(gts, res)
    finally:
        del scorer  # Meteor.__del__ stops the Java process
    return float(score), np.asarray(per, dtype=float)


def compute_spice(candidates: Sequence[str],
                  references: Sequence[Sequence[str]]) -> tuple[float, np.ndarray]:
    """SPICE 1.0 through pycocoevalcap's ``Spice`` (needs Java and the Stanford CoreNLP 3.6.0 jars).

    Parameters
    ----------
    candidates : sequence of str
        One tokenised caption per image.
    references : sequence of sequence of str
        Tokenised references of each image.

    Returns
    -------
    mean : float
        The mean over images of the per-image SPICE F-score (pycocoevalcap's value).
    per_image : ndarray, shape (n_images,)
        The per-image F-scores ("All" category).

    Raises
    ------
    RuntimeError
        When anything SPICE needs is missing; nothing is downloaded.
    """
    cands, refs = _check_captions(candidates, references)
    _require("spice")
    from pycocoevalcap.spice.spice import Spice

    gts, res = _as_coco_dicts(cands, refs)
    score, per = Spice().compute_score(gts, res)
    return float(score), np.array([d["All"]["f"] for d in per], dtype=float)


# --------------------------------------------------------------------------- CLIP-S
def _as_matrix(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().float().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (n, dim), got {arr.shape}")
    ensure_finite(arr, what=name)
    return arr


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), np.finfo(np.float64).tiny)


def _as_reference_list(x: Any, n: int, dim: int) -> list[np.ndarray]:
    """Reference embeddings as one (n_refs_i, dim) array per image."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().float().numpy()
    if isinstance(x, np.ndarray) and x.ndim == 3:
        out = [x[i] for i in range(len(x))]
    else:
        out = [np.atleast_2d(np.asarray(r.detach().cpu().float().numpy() if hasattr(r, "detach") else r,
                                        dtype=np.float64)) for r in x]
    if len(out) != n:
        raise ValueError(f"reference_embeddings must hold one entry per image ({n}), got {len(out)}")
    for i, r in enumerate(out):
        if r.ndim != 2 or r.shape[1] != dim or len(r) == 0:
            raise ValueError(f"reference_embeddings[{i}] must have shape (n_refs, {dim}), got {r.shape}")
        ensure_finite(r, what=f"reference_embeddings[{i}]")
    return [np.asarray(r, dtype=np.float64) for r in out]


def compute_clip_score(image_embeddings: Any, candidate_embeddings: Any, *,
                       w: float = 2.5) -> tuple[float, np.ndarray]:
    """CLIP-S (Hessel et al., 2021): ``w * max(cos(image, candidate), 0)``, averaged over images.

    Parameters
    ----------
    image_embeddings : array-like, shape (n_images, dim)
        CLIP image embeddings of the *seen* images.
    candidate_embeddings : array-like, shape (n_images, dim)
        CLIP text embeddings of the candidate captions (BrainHub embeds
        ``"A photo depicts " + caption`` with ViT-B/32).
    w : float
        Rescaling weight (2.5).

    Returns
    -------
    mean : float
    per_image : ndarray, shape (n_images,)
    """
    img = _as_matrix(image_embeddings, "image_embeddings")
    cand = _as_matrix(candidate_embeddings, "candidate_embeddings")
    if img.shape != cand.shape:
        raise ValueError(f"image_embeddings {img.shape} and candidate_embeddings {cand.shape} must have "
                         "the same shape (one row per image)")
    per = float(w) * np.clip(np.sum(_unit(img) * _unit(cand), axis=1), 0, None)
    return float(np.mean(per)), per


def compute_ref_clip_score(image_embeddings: Any, candidate_embeddings: Any, reference_embeddings: Any, *,
                           w: float = 2.5) -> tuple[float, np.ndarray]:
    """RefCLIP-S: per image, the harmonic mean of CLIP-S and the best candidate–reference cosine.

    Parameters
    ----------
    image_embeddings, candidate_embeddings : array-like, shape (n_images, dim)
        As in :func:`compute_clip_score`.
    reference_embeddings : array, shape (n_images, n_refs, dim) | sequence of arrays
        CLIP text embeddings of each image's reference captions (one (n_refs_i, dim) array
        per image when the number of references varies).
    w : float
        CLIP-S weight (2.5).

    Returns
    -------
    mean : float
    per_image : ndarray, shape (n_images,)
        ``2 * a * b / (a + b)`` with ``a`` the CLIP-S of the image and ``b = max(max_r cos(c, r),
        0)``; 0 when both are 0.

    Notes
    -----
    The clipping of ``b`` at 0 follows the paper's definition; the reference code (and
    BrainHub's copy) does not clip, which only matters when every reference has a negative
    cosine to the candidate.
    """
    _, clip_s = compute_clip_score(image_embeddings, candidate_embeddings, w=w)
    cand = _unit(_as_matrix(candidate_embeddings, "candidate_embeddings"))
    refs = _as_reference_list(reference_embeddings, len(cand), cand.shape[1])
    text = np.array([max(float(np.max(_unit(r) @ c)), 0.0) for c, r in zip(cand, refs)])
    denom = clip_s + text
    with np.errstate(invalid="ignore", divide="ignore"):
        per = np.where(denom > 0, 2 * clip_s * text / np.where(denom > 0, denom, 1.0), 0.0)
    return float(np.mean(per)), per


# --------------------------------------------------------------------------- results
@dataclass(repr=False)
class CaptionScores:
    """Caption metrics with bootstrap confidence intervals.

    Parameters
    ----------
    metrics : dict
        ``key -> {"value", "ci_low", "ci_high"}`` for every metric computed, in report order
        (keys ``bleu1`` … ``bleu4``, ``meteor``, ``rouge_l``, ``cider``, ``spice``,
        ``clip_s``, ``refclip_s``; labels in :data:`METRIC_LABELS`), plus ``"shuffled"``
        when the baseline was computed: the metric with every caption scored against another
        image's references (and image), the mean over 5 seeded derangements (NaN for METEOR
        and SPICE, whose Java programs would have to run again). Values are on
        pycocoevalcap's scale (BrainHub's tables show them × 100).
    per_image : dict of ndarray
        ``key -> (n_images,)`` per-image scores (for BLEU, pycocoevalcap's per-image BLEU;
        the corpus value is not their mean).
    unavailable : dict
        ``key -> reason`` for requested metrics that could not be computed here.
    n_images : int
        Number of images scored.
    protocol : dict
        Settings (tokenizer, bootstrap, CLIP prompt, ...) and a plain-language ``"description"``.
    replicates : ndarray, shape (n_boot, n_metrics) | None
        Bootstrap replicates (columns in ``metrics`` order); kept in memory only.
    """

    metrics: dict[str, dict[str, float]]
    per_image: dict[str, np.ndarray] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    n_images: int = 0
    protocol: dict[str, Any] = field(default_factory=dict)
    replicates: np.ndarray | None = field(default=None, compare=False)

    @property
    def description(self) -> str:
        """Plain-language description of the protocol."""
        return str(self.protocol.get("description", ""))

    def __getitem__(self, name: str) -> float:
        """Point estimate of metric ``name`` (a key such as ``"cider"`` or a label such as ``"CIDEr"``)."""
        key = {v: k for k, v in METRIC_LABELS.items()}.get(name, name)
        if key not in self.metrics:
            why = self.unavailable.get(key)
            raise KeyError(f"{name!r} was not computed" + (f": {why}" if why else
                                                            f"; computed: {list(self.metrics)}"))
        return self.metrics[key]["value"]

    def to_frame(self, *, percent: bool = False):
        """Tidy :class:`pandas.DataFrame`: metric, label, value, ci_low, ci_high, shuffled, available, note.

        Parameters
        ----------
        percent : bool
            Multiply values and bounds by 100 (the scale of BrainHub's tables).

        Returns
        -------
        frame : pandas.DataFrame
            One row per computed or unavailable metric, in :data:`METRIC_LABELS` order
            (unavailable ones with NaN values, ``available=False`` and the reason in ``note``);
            ``shuffled`` is the shuffled-pairing baseline (NaN where not computed).
        """
        import pandas as pd

        scale = 100.0 if percent else 1.0
        rows = []
        for key, label in METRIC_LABELS.items():
            if key in self.metrics:
                d = self.metrics[key]
                rows.append({"metric": key, "label": label, "value": d["value"] * scale,
                             "ci_low": d["ci_low"] * scale, "ci_high": d["ci_high"] * scale,
                             "shuffled": d.get("shuffled", float("nan")) * scale, "available": True, "note": ""})
            elif key in self.unavailable:
                rows.append({"metric": key, "label": label, "value": float("nan"), "ci_low": float("nan"),
                             "ci_high": float("nan"), "shuffled": float("nan"), "available": False,
                             "note": self.unavailable[key]})
        columns = ["metric", "label", "value", "ci_low", "ci_high", "shuffled", "available", "note"]
        return pd.DataFrame(rows, columns=columns)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (NaN becomes ``None``); inverse of :meth:`from_dict`.

        Returns
        -------
        data : dict
            ``metrics``, ``labels``, ``per_image``, ``unavailable``, ``n_images`` and ``protocol``
            (the bootstrap replicates are not written).
        """
        return {
            "metrics": {k: {kk: json_float(v) for kk, v in d.items()} for k, d in self.metrics.items()},
            "labels": {k: METRIC_LABELS[k] for k in self.metrics},
            "per_image": {k: [json_float(v) for v in np.asarray(a, dtype=float)]
                          for k, a in self.per_image.items()},
            "unavailable": dict(self.unavailable),
            "n_images": int(self.n_images),
            "protocol": to_jsonable(self.protocol),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaptionScores:
        """Rebuild scores from :meth:`to_dict` output.

        Parameters
        ----------
        data : dict
            The output of :meth:`to_dict` (e.g. read back from JSON); ``None`` values become NaN.

        Returns
        -------
        scores : CaptionScores
            The scores, without bootstrap replicates.
        """
        def f(v):
            return float("nan") if v is None else float(v)

        return cls(
            metrics={k: {kk: f(v) for kk, v in d.items()} for k, d in data["metrics"].items()},
            per_image={k: np.array([f(v) for v in a]) for k, a in data.get("per_image", {}).items()},
            unavailable=dict(data.get("unavailable", {})),
            n_images=int(data.get("n_images", 0)),
            protocol=dict(data.get("protocol", {})),
        )

    def __repr__(self) -> str:
        p = self.protocol
        ci = p.get("ci", 0.95)
        head = (f"<CaptionScores | {self.n_images} images, tokenizer {p.get('tokenizer', '?')}, "
                f"{ci:.0%} bootstrap CI ({p.get('n_boot', '?')} resamples)>")
        shuffled = any("shuffled" in d for d in self.metrics.values())
        lines = [head, f"  {'metric':<10}  {'value':>7}  {f'{ci:.0%} CI':<17}"
                       + ("  shuffled pairing" if shuffled else "")]
        for key, d in self.metrics.items():
            base = ""
            if shuffled:
                base = f"  {d['shuffled']:>7.4f}" if math.isfinite(d.get("shuffled", math.nan)) else "        —"
            lines.append(f"  {METRIC_LABELS[key]:<10}  {d['value']:>7.4f}  "
                         f"[{d['ci_low']:.4f}, {d['ci_high']:.4f}]{base}")
        for key, why in self.unavailable.items():
            lines.append(f"  {METRIC_LABELS[key]:<10}  unavailable: {why[:80]}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- evaluate
def _check_metrics(metrics: Sequence[str] | str | None) -> tuple[list[str], bool]:
    if metrics is None or metrics == "all":
        return list(_METRIC_GROUPS), False
    if isinstance(metrics, str):
        metrics = [metrics]
    out = []
    for m in metrics:
        aliases = {"bleu1": "bleu", "bleu2": "bleu", "bleu3": "bleu", "bleu4": "bleu", "rouge": "rouge_l",
                   "cider_d": "cider", "clipscore": "clip_s", "refclipscore": "refclip_s"}
        key = aliases.get(str(m).lower(), str(m).lower())
        check_option("metrics", key, _METRIC_GROUPS)
        if key not in out:
            out.append(key)
    return out, True


def _embed_texts(encoder: Any, texts: list[str], prompt: str) -> np.ndarray:
    prefix = prompt if (not prompt or prompt.endswith(" ")) else prompt + " "
    return np.asarray(encoder.embed_texts([prefix + t for t in texts], outputs=("pooled",))["pooled"],
                      dtype=np.float64)


@verbose
@fill_doc
def evaluate_captions(candidates: Sequence[str], references: Sequence[Sequence[str]], *,
                      image_embeddings: Any = None, candidate_embeddings: Any = None,
                      reference_embeddings: Any = None, encoder: Any = None, images: Any = None,
                      clip_prompt: str = "A photo depicts",
                      metrics: Sequence[str] | str | None = None,
                      tokenizer: Literal["auto", "ptb", "python", "none"] = "auto",
                      n_boot: int = 1000, ci: float = 0.95,
                      random_state: None | int | np.random.Generator = 0, baselines: bool = True,
                      verbose: bool | str | int | None = None) -> CaptionScores:
    """Score decoded captions against reference captions (BrainHub / COCO-caption protocol).

    Parameters
    ----------
    candidates : sequence of str
        One generated (or retrieved) caption per test image.
    references : sequence of sequence of str
        The reference captions of each image (e.g. its 5 COCO captions).
    image_embeddings : array-like, shape (n_images, dim) | None
        CLIP embeddings of the seen images, for CLIP-S and RefCLIP-S.
    candidate_embeddings : array-like, shape (n_images, dim) | None
        CLIP text embeddings of ``candidates``; computed with ``encoder`` when None.
    reference_embeddings : array, shape (n_images, n_refs, dim) | sequence of arrays | None
        CLIP text embeddings of ``references``, for RefCLIP-S; computed with ``encoder`` when None.
    encoder : ClipEncoder | None
        A :class:`~neurodecode.embeddings.ClipEncoder` used for whatever embeddings are not
        given (texts are embedded as ``clip_prompt + " " + caption``, as the reference
        implementation does; images from ``images``).
    images : array, shape (n_images, height, width, 3) | None
        The seen images, embedded with ``encoder`` when ``image_embeddings`` is None.
    clip_prompt : str
        Prefix of every caption embedded by ``encoder`` (``"A photo depicts"`` in CLIPScore and
        BrainHub; ``""`` for none).
    metrics : sequence of str | "all" | None
        Which metrics: any of ``"bleu"`` (BLEU-1..4), ``"meteor"``, ``"rouge_l"``, ``"cider"``,
        ``"spice"``, ``"clip_s"``, ``"refclip_s"``. None/``"all"``: every metric that can run
        here; the others are listed in :attr:`CaptionScores.unavailable` with the reason.
        Naming a metric that cannot run raises.
    tokenizer : ``"auto"`` | ``"ptb"`` | ``"python"`` | ``"none"``
        How captions are tokenised for the n-gram metrics (:func:`tokenize_captions`);
        ``"none"`` when they are already tokenised.
    n_boot : int
        Bootstrap resamples of the images for the CIs; 0 skips them (bounds are NaN).
    ci : float
        Confidence level of the percentile intervals.
    random_state : None | int | numpy.random.Generator
        Seed of the bootstrap and of the baseline's derangements.
    baselines : bool
        Also score a shuffled pairing (``metrics[key]["shuffled"]``): each caption against
        the references (and, for CLIP-S / RefCLIP-S, the image) of another item, the mean over
        5 seeded derangements. It reruns BLEU, ROUGE-L and CIDEr on the re-paired captions
        (pure Python, cheap) and reuses the CLIP embeddings; METEOR and SPICE get none (NaN),
        since each would need another run of its Java program.
    %(verbose)s

    Returns
    -------
    scores : CaptionScores

    Notes
    -----
    **Confidence intervals** resample images with replacement (all metrics share the
    resamples). For BLEU, the n-gram matches, candidate n-gram counts and lengths of the
    drawn images are summed and the corpus formula applied, so each replicate is the BLEU of
    the resampled corpus. ROUGE-L, SPICE, CLIP-S and RefCLIP-S are means of per-image scores.
    For CIDEr the IDF is kept fixed at its value on the full set (recomputing it on a
    resample with duplicated images would change the weights), so the replicates are means
    of the fixed per-image CIDEr scores. METEOR's value is the jar's corpus score; its
    interval is that of the mean per-image METEOR, shifted by the (small) difference between
    the corpus score and that mean so that it brackets the reported value.
    """
    cands_raw, refs_raw = _check_captions(candidates, references)
    n = len(cands_raw)
    wanted, explicit = _check_metrics(metrics)
    if isinstance(n_boot, bool) or int(n_boot) != n_boot or n_boot < 0:
        raise ValueError(f"n_boot must be a non-negative integer, got {n_boot!r}")
    n_boot = int(n_boot)
    ci = check_ci(ci)
    rng = check_random_state(random_state)
    avail = caption_metric_availability()
    unavailable: dict[str, str] = {}

    # ---- which metrics can run
    for m in ("meteor", "spice"):
        if m in wanted and avail[m] is not None:
            if explicit:
                raise RuntimeError(f"{METRIC_LABELS[m]} was requested but is unavailable: {avail[m]}.")
            unavailable[m] = avail[m]  # type: ignore[assignment]
    img_emb, cand_emb, ref_emb = _clip_inputs(wanted, explicit, unavailable, cands_raw, refs_raw,
                                              image_embeddings, candidate_embeddings, reference_embeddings,
                                              encoder, images, clip_prompt)

    # ---- tokenise
    text_wanted = [m for m in _TEXT_METRICS if m in wanted and m not in unavailable]
    kind = _resolve_tokenizer(tokenizer) if text_wanted else "none"
    cands = refs = None
    if text_wanted:
        flat_refs = [r for rs in refs_raw for r in rs]
        toks = tokenize_captions(cands_raw + flat_refs, tokenizer=kind)  # type: ignore[arg-type]
        cands = toks[:n]
        bounds = np.cumsum([0] + [len(rs) for rs in refs_raw])
        refs = [toks[n + a:n + b] for a, b in itertools.pairwise(bounds)]
    logger.info("Scoring %d captions (%s) with %s tokenisation, %d bootstraps", n,
                ", ".join(m for m in wanted if m not in unavailable), kind, n_boot)

    values, per_image, mean_items, shift, bleu_stats = _all_scores(
        text_wanted, wanted, explicit, unavailable, cands, refs, img_emb, cand_emb, ref_emb)

    names, low, high, replicates = _caption_intervals(values, mean_items, shift, bleu_stats, n, n_boot, ci, rng)
    out_metrics = {name: {"value": float(values[name]), "ci_low": float(low[i]), "ci_high": float(high[i])}
                   for i, name in enumerate(names)}
    seed = int(rng.integers(0, 2**31 - 1))  # drawn after the bootstrap, which it leaves unchanged
    if baselines:
        shuffled = _shuffled_scores(names, n, cands, refs, img_emb, cand_emb, ref_emb, seed)
        for name in names:
            out_metrics[name]["shuffled"] = shuffled.get(name, math.nan)
    ordered_unavail = {k: unavailable[k] for k in METRIC_LABELS if k in unavailable}
    protocol = _caption_protocol(kind, clip_prompt, encoder, n_boot, ci)
    protocol["baselines"] = ({"n_derangements": N_DERANGEMENTS, "seed": seed, "not_shuffled": list(_NOT_SHUFFLED),
                              "description": _SHUFFLED_TEXT} if baselines else None)
    return CaptionScores(metrics=out_metrics, per_image=per_image, unavailable=ordered_unavail,
                         n_images=n, protocol=protocol, replicates=replicates)


def _clip_inputs(wanted: list[str], explicit: bool, unavailable: dict[str, str], cands_raw: list[str],
                 refs_raw: list[list[str]], image_embeddings: Any, candidate_embeddings: Any,
                 reference_embeddings: Any, encoder: Any, images: Any, clip_prompt: str) -> tuple[Any, Any, Any]:
    """Image, candidate and reference embeddings for CLIP-S / RefCLIP-S (None where they cannot run)."""
    n = len(cands_raw)
    need_img = [m for m in ("clip_s", "refclip_s") if m in wanted]
    img_emb = cand_emb = ref_emb = None
    if need_img:
        if image_embeddings is None and images is not None and encoder is not None:
            image_embeddings = encoder.embed_images(images, outputs=("pooled",))["pooled"]
        if candidate_embeddings is None and encoder is not None:
            candidate_embeddings = _embed_texts(encoder, cands_raw, clip_prompt)
        if image_embeddings is None or candidate_embeddings is None:
            why = ("needs image_embeddings (or images and an encoder) and candidate_embeddings (or an "
                   "encoder to embed the captions)")
            for m in need_img:
                if explicit:
                    raise ValueError(f"{METRIC_LABELS[m]} {why}")
                unavailable[m] = why
        else:
            img_emb = _as_matrix(image_embeddings, "image_embeddings")
            cand_emb = _as_matrix(candidate_embeddings, "candidate_embeddings")
            if len(img_emb) != n or len(cand_emb) != n:
                raise ValueError(f"image_embeddings ({len(img_emb)}) and candidate_embeddings "
                                 f"({len(cand_emb)}) must have one row per image ({n})")
            if "refclip_s" in wanted:
                if reference_embeddings is None and encoder is not None:
                    flat = _embed_texts(encoder, [r for rs in refs_raw for r in rs], clip_prompt)
                    bounds = np.cumsum([0] + [len(rs) for rs in refs_raw])
                    reference_embeddings = [flat[a:b] for a, b in itertools.pairwise(bounds)]
                if reference_embeddings is None:
                    why = "needs reference_embeddings (or an encoder to embed the references)"
                    if explicit:
                        raise ValueError(f"RefCLIP-S {why}")
                    unavailable["refclip_s"] = why
                else:
                    ref_emb = reference_embeddings

    return img_emb, cand_emb, ref_emb


def _all_scores(text_wanted: list[str], wanted: list[str], explicit: bool, unavailable: dict[str, str],
                cands: Any, refs: Any, img_emb: Any, cand_emb: Any, ref_emb: Any) -> tuple[dict, dict, dict, dict, Any]:
    """Every metric's value and per-image scores; what the bootstrap needs (means, shifts, BLEU statistics)."""
    values: dict[str, float] = {}
    per_image: dict[str, np.ndarray] = {}
    mean_items: dict[str, np.ndarray] = {}   # metrics whose replicate is a mean of per-image values
    shift: dict[str, float] = {}
    bleu_stats = None
    if "bleu" in text_wanted:
        bleu_stats = _bleu_stats(cands, refs, 4)
        corpus, per = compute_bleu(cands, refs, n=4)
        for k in range(4):
            values[f"bleu{k + 1}"] = float(corpus[k])
            per_image[f"bleu{k + 1}"] = per[:, k]
    if "meteor" in text_wanted:
        try:
            score, per = compute_meteor(cands, refs)
        except Exception as err:  # Java failed at run time
            if explicit:
                raise
            unavailable["meteor"] = f"METEOR failed: {err}"
            warn(f"METEOR failed and is reported unavailable: {err}")
        else:
            values["meteor"], per_image["meteor"] = score, per
            mean_items["meteor"] = per
            shift["meteor"] = score - float(np.mean(per))
    if "rouge_l" in text_wanted:
        values["rouge_l"], per_image["rouge_l"] = compute_rouge_l(cands, refs)
        mean_items["rouge_l"] = per_image["rouge_l"]
    if "cider" in text_wanted:
        values["cider"], per_image["cider"] = compute_cider(cands, refs)
        mean_items["cider"] = per_image["cider"]
    if "spice" in text_wanted:
        try:
            score, per = compute_spice(cands, refs)
        except Exception as err:
            if explicit:
                raise
            unavailable["spice"] = f"SPICE failed: {err}"
            warn(f"SPICE failed and is reported unavailable: {err}")
        else:
            values["spice"], per_image["spice"] = score, per
            mean_items["spice"] = per
    if img_emb is not None and cand_emb is not None:
        if "clip_s" in wanted:
            values["clip_s"], per_image["clip_s"] = compute_clip_score(img_emb, cand_emb)
            mean_items["clip_s"] = per_image["clip_s"]
        if "refclip_s" in wanted and ref_emb is not None:
            values["refclip_s"], per_image["refclip_s"] = compute_ref_clip_score(img_emb, cand_emb, ref_emb)
            mean_items["refclip_s"] = per_image["refclip_s"]

    return values, per_image, mean_items, shift, bleu_stats


def _caption_intervals(values: dict, mean_items: dict, shift: dict, bleu_stats: Any, n: int, n_boot: int,
                       ci: float, rng: np.random.Generator) -> tuple[list[str], np.ndarray, np.ndarray, Any]:
    """Paired percentile intervals over images of every scored metric (NaN bounds when ``n_boot`` is 0)."""
    names = [k for k in METRIC_LABELS if k in values]
    low = np.full(len(names), np.nan)
    high = np.full(len(names), np.nan)
    replicates = None
    if n_boot and names:
        counts = bootstrap_counts(n, n_boot, rng).astype(np.float64)
        cols = []
        bleu_reps = None
        if bleu_stats is not None:
            bleu_reps = _bleu_vector(counts @ bleu_stats["correct"], counts @ bleu_stats["guess"],
                                     counts @ bleu_stats["testlen"], counts @ bleu_stats["reflen"], 4)
        for name in names:
            if name.startswith("bleu"):
                cols.append(bleu_reps[:, int(name[-1]) - 1])  # type: ignore[index]
            else:
                per = np.nan_to_num(mean_items[name], nan=0.0) if name == "spice" else mean_items[name]
                cols.append(counts @ per / n + shift.get(name, 0.0))
        replicates = np.stack(cols, axis=1)
        low, high = percentile_interval(replicates, ci)
    return names, low, high, replicates


_SHUFFLED_TEXT = (f"Shuffled pairing: every metric with each caption scored against the references (and image) of "
                  f"another item, the mean over {N_DERANGEMENTS} derangements (no caption with its own item) drawn "
                  "from random_state; not computed for METEOR and SPICE (another Java run each). A caption beats "
                  "trivial only where its value beats that.")


def _shuffled_scores(names: Sequence[str], n: int, cands: Any, refs: Any, img_emb: Any, cand_emb: Any,
                     ref_emb: Any, seed: int) -> dict[str, float]:
    """Each metric in ``names`` (but METEOR, SPICE) with caption i scored against item ``perm[i]``, averaged.

    The same scorers as the values, on the tokenised captions and embeddings already computed: BLEU,
    ROUGE-L and CIDEr with the references re-paired (CIDEr's idf, from the set of references, is
    unchanged), CLIP-S and RefCLIP-S with the image (and reference) embeddings re-paired.
    """
    if n < 2:
        return {}
    rng = np.random.default_rng([int(seed), 2])
    acc: dict[str, list[float]] = defaultdict(list)
    ref_list = None
    if "refclip_s" in names and ref_emb is not None:
        ref_list = _as_reference_list(ref_emb, n, cand_emb.shape[1])
    for _ in range(N_DERANGEMENTS):
        perm = random_derangement(n, rng)
        if cands is not None:
            prefs = [refs[j] for j in perm]
            if "bleu1" in names:
                corpus, _ = compute_bleu(cands, prefs, n=4)
                for k in range(4):
                    acc[f"bleu{k + 1}"].append(float(corpus[k]))
            if "rouge_l" in names:
                acc["rouge_l"].append(compute_rouge_l(cands, prefs)[0])
            if "cider" in names:
                acc["cider"].append(compute_cider(cands, prefs)[0])
        if "clip_s" in names:
            acc["clip_s"].append(compute_clip_score(img_emb[perm], cand_emb)[0])
        if ref_list is not None:
            acc["refclip_s"].append(compute_ref_clip_score(img_emb[perm], cand_emb, [ref_list[j] for j in perm])[0])
    return {k: float(np.mean(v)) for k, v in acc.items()}


def _caption_protocol(kind: str, clip_prompt: str, encoder: Any, n_boot: int, ci: float) -> dict[str, Any]:
    """The settings recorded with the scores."""
    return {
        "name": "coco_caption", "tokenizer": {"ptb": "stanford-ptb-3.4.1", "python": "python-ptb",
                                              "none": "none (pre-tokenised)"}[kind],
        "punctuation_removed": list(PUNCTUATIONS), "bleu": "corpus, closest ref length, n=4",
        "rouge_l_beta": 1.2, "cider": "CIDEr-D (pycocoevalcap Cider: n=4, sigma=6, idf from the evaluated "
                                      "set's references, x10)",
        "clip_s_w": 2.5, "clip_prompt": clip_prompt if encoder is not None else None,
        "n_boot": n_boot, "ci": ci,
        "bootstrap": "images, percentile, paired across metrics; CIDEr idf fixed on the full set",
        "description": _description(kind, ci, n_boot),
    }


def _description(kind: str, ci: float, n_boot: int) -> str:
    tok = {"ptb": "Stanford PTBTokenizer 3.4.1 (-lowerCase)",
           "python": "a Python re-implementation of Stanford's PTBTokenizer (-lowerCase)",
           "none": "no tokenisation (captions given pre-tokenised)"}[kind]
    boot = (f"{ci:.0%} percentile CIs from {n_boot} bootstrap resamples of the images (CIDEr's idf held "
            "at its full-set value; BLEU recomputed from the resampled corpus statistics)."
            if n_boot else "No bootstrap (n_boot=0).")
    return (f"COCO-caption metrics as pycocoevalcap computes them, on captions tokenised with {tok} and "
            "stripped of punctuation: corpus BLEU-1..4 (closest reference length), METEOR 1.5, ROUGE-L "
            "(beta 1.2, mean over images), CIDEr-D (n=4, sigma 6, idf from this set's references), SPICE; "
            "CLIP-S = 2.5 * max(cos(image, caption), 0) and RefCLIP-S = harmonic mean of CLIP-S and the "
            "best caption-reference cosine, means over images. " + boot)
