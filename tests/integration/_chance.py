"""One rule for every end-to-end test: decoding beats chance, with a margin (issue #13, must-show 1).

A score passes when its bootstrap CI lies above chance (``ci_low > chance``) *and* its point value clears
chance by a stated margin: ``value >= ratio * chance`` for N-way / top-k identification, ``value >=
two_way`` for 2-way identification (chance 0.5). Chance is read from the metric itself and, for a
retrieval score (``RetrievalScores.to_dict()``), checked against its protocol (N-way: 1 / candidates
used; top-k: k / items; 2-way: 0.5), so a wrongly recorded chance level cannot make a test easier.

A bug that misaligns predictions and targets (e.g. test targets shifted by one row) drops every score
to chance and fails this rule; a test that only checks ``ci_low <= value <= ci_high`` does not notice.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

RATIO = 3.0     # N-way / top-k: point value >= 3 x chance
TWO_WAY = 0.6   # 2-way: point value >= 0.6 (chance 0.5)


def _expected_chance(name: str, scores: Mapping[str, Any]) -> float | None:
    """Chance of metric ``name`` from the protocol of a ``RetrievalScores.to_dict()``, or None if unknown."""
    protocol = scores.get("protocol") or {}
    if name.startswith("2way"):
        return 0.5
    if name.startswith("nway_top1"):
        used = protocol.get("n_candidates_used")
        return 1.0 / used if used else None
    top = re.match(r"top(\d+)_", name)
    n = scores.get("n_items")
    if top and n:
        return min(int(top.group(1)), n) / n
    return None


def check_above_chance(metric: Mapping[str, float], name: str, *, ratio: float = RATIO,
                       two_way: float = TWO_WAY, where: str = "") -> list[str]:
    """The failures of one score ``{"value", "ci_low", "chance", ...}`` named ``name`` (empty: it passes)."""
    value, low, chance = (float(metric[k]) for k in ("value", "ci_low", "chance"))
    label = f"{where} {name}".strip()
    out = []
    if not all(math.isfinite(v) for v in (value, low, chance)) or not 0 < chance < 1:
        return [f"{label}: not a finite score with a chance level in (0, 1): {dict(metric)}"]
    if not low > chance:
        out.append(f"{label}: CI lower bound {low:.3f} is not above chance {chance:.3f}")
    floor = two_way if name.startswith("2way") else ratio * chance
    if not value >= floor:
        out.append(f"{label}: {value:.3f} < {floor:.3f} (chance {chance:.3f}, required "
                   f"{'>= ' + format(two_way, 'g') if name.startswith('2way') else format(ratio, 'g') + ' x chance'})")
    return out


def check_scores(scores: Mapping[str, Any], metric: str = "nway_top1_forward", *, ratio: float = RATIO,
                 two_way: float = TWO_WAY, where: str = "") -> list[str]:
    """The failures of ``metric`` in one ``RetrievalScores.to_dict()`` (chance checked against the protocol)."""
    if metric not in scores["metrics"]:
        return [f"{where}: no metric {metric!r} (has {sorted(scores['metrics'])})"]
    m = scores["metrics"][metric]
    expected = _expected_chance(metric, scores)
    if expected is not None and not math.isclose(m["chance"], expected, rel_tol=1e-6):
        return [f"{where} {metric}: recorded chance {m['chance']} != {expected} from the protocol"]
    return check_above_chance(m, metric, ratio=ratio, two_way=two_way, where=where)


def _raise(failures: list[str]) -> None:
    if failures:
        raise AssertionError("decoding is not above chance with the required margin:\n  " + "\n  ".join(failures))


def assert_above_chance(scores: Mapping[str, Any], metric: str = "nway_top1_forward", *, ratio: float = RATIO,
                        two_way: float = TWO_WAY, where: str = "") -> None:
    """Assert the rule for one score: a ``RetrievalScores.to_dict()`` (``metric`` is looked up in it) or
    a plain ``{"value", "ci_low", "ci_high", "chance"}`` dict (e.g. an ablation baseline) named ``metric``."""
    if "metrics" in scores:
        _raise(check_scores(scores, metric, ratio=ratio, two_way=two_way, where=where))
    else:
        _raise(check_above_chance(scores, metric, ratio=ratio, two_way=two_way, where=where))


def assert_run_above_chance(metrics: Mapping[str, Any], models: Iterable[str] = ("ridge", "mlp"),
                            metric: str = "nway_top1_forward", *, subjects: Iterable[int] | None = None,
                            ratio: float = RATIO, two_way: float = TWO_WAY) -> dict[str, float]:
    """Assert the rule for every model x subject of a fit run's ``metrics.json``; all failures reported at once.

    Returns ``"model/subjNN" -> value`` (handy to print when choosing margins).
    """
    subjects = metrics["subjects"] if subjects is None else list(subjects)
    failures, values = [], {}
    for model in models:
        per = metrics["models"].get(model)
        if per is None:
            failures.append(f"model {model!r} missing from metrics.json (has {sorted(metrics['models'])})")
            continue
        for s in subjects:
            key = f"subj{int(s):02d}"
            if key not in per:
                failures.append(f"{model}/{key} missing from metrics.json")
                continue
            values[f"{model}/{key}"] = per[key]["metrics"].get(metric, {}).get("value", math.nan)
            failures += check_scores(per[key], metric, ratio=ratio, two_way=two_way, where=f"{model}/{key}")
    _raise(failures)
    return values
