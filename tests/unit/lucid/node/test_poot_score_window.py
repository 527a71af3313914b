"""ScoreWindow's running sums equal a recomputation from scratch, however far the window has slid."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lucid.node.poot.score_window import ScoreWindow
from lucid.node.poot.validator import PoOTValidator


@dataclass(frozen=True)
class S:
    is_valid: bool
    score: float


def reliability_from_scratch(history: list[S]) -> float:
    if not history:
        return 0.5
    success = sum(1 for h in history if h.is_valid) / len(history)
    return 0.7 * success + 0.3 * math.fsum(h.score for h in history) / len(history) / 100


def confidence_from_scratch(score: float, history: list[S]) -> float:
    scores = [h.score for h in history if h.is_valid]
    if len(scores) < 2:
        return 0.5
    mean = math.fsum(scores) / len(scores)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in scores) / len(scores))
    if sd < 1e-9:
        return 1.0 if abs(score - mean) < 1e-9 else 0.1
    return round(min(1.0, max(0.1, 1 - abs(score - mean) / sd / 3)), 4)


scores = st.integers(min_value=0, max_value=10_000).map(lambda h: h / 100)  # validator scores: 2 places
summaries = st.builds(S, st.booleans(), scores)


@settings(max_examples=300, deadline=None)
@given(st.lists(summaries, max_size=400), st.integers(min_value=1, max_value=120), scores)
def test_sliding_window_matches_recomputation(pushed: list[S], capacity: int, probe: float) -> None:
    window = ScoreWindow(capacity)
    for s in pushed:
        window.push(s)
    newest = list(reversed(pushed))[:capacity]
    assert list(window) == newest
    assert window.newest(5) == newest[:5]
    assert window.reliability() == pytest.approx(reliability_from_scratch(newest), abs=1e-12)
    assert window.confidence(probe) == pytest.approx(confidence_from_scratch(probe, newest), abs=1.5e-4)


def test_no_drift_after_a_million_slides() -> None:
    window = ScoreWindow(100)
    for i in range(1_000_000):
        window.push(S(i % 3 != 0, (i * 7919 % 10_001) / 100))
    newest = list(window)
    assert window.reliability() == pytest.approx(reliability_from_scratch(newest), abs=1e-12)
    assert window.confidence(55.55) == confidence_from_scratch(55.55, newest)


def test_of_keeps_the_newest_and_is_what_the_validator_uses_for_lists() -> None:
    history = [S(True, 70.0)] * 3 + [S(False, 10.0)] * 5
    window = ScoreWindow.of(history, 4)
    assert len(window) == 4 and list(window) == history[:4]
    assert PoOTValidator.reliability(history) == pytest.approx(reliability_from_scratch(history))
    assert PoOTValidator.confidence(70, history) == 1.0
    assert PoOTValidator.confidence(69.99, history) == 0.1  # zero spread: anything else is atypical
    assert ScoreWindow(5).confidence(50) == 0.5 and ScoreWindow(5).reliability() == 0.5
    with pytest.raises(ValueError):
        ScoreWindow(0)
