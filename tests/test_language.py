"""comparators.language: which language an answer is in, enough to see a candidate switch."""

from __future__ import annotations

import pytest
from shadowlens.comparators.language import language, language_changed

from tests.builders import SHARED_DATA, alpaca

ENGLISH = "The capital of France is Paris, and it is known for the Eiffel Tower and the Louvre."


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        (ENGLISH, "en"),
        ("Die Hauptstadt von Frankreich ist Paris, und sie ist nicht klein für eine Stadt.", "de"),
        ("La capitale de la France est Paris, et elle est connue pour la tour Eiffel.", "fr"),
        ("La capital de Francia es París, y es muy conocida por la torre Eiffel.", "es"),
        ("La capitale della Francia è Parigi, che è anche conosciuta per la torre Eiffel.", "it"),
        ("A capital da França é Paris, que é também conhecida pela torre Eiffel e não só.", "pt"),
        ("De hoofdstad van Frankrijk is Parijs, en het is niet klein voor een stad.", "nl"),
        ("Столица Франции — Париж, он известен Эйфелевой башней и Лувром.", "cyrillic"),
        ("フランスの首都はパリです。エッフェル塔とルーブル美術館で知られています。", "ja"),
        ("法国的首都是巴黎以埃菲尔铁塔和卢浮宫而闻名于世界各地。", "han"),
        ("عاصمة فرنسا هي باريس، وهي معروفة ببرج إيفل ومتحف اللوفر.", "ar"),
        ("def f(x):\n    return x * 2  # 42", None),  # code: no function words to tell
        ("Paris.", None),  # too short
        ("", None),
    ],
)
def test_language(text: str, lang: str | None) -> None:
    assert language(text) == lang


def test_a_switch_is_claimed_only_between_two_known_languages() -> None:
    assert language_changed(ENGLISH, "La capitale de la France est Paris, et elle est belle.")
    assert language_changed(ENGLISH, ENGLISH.upper()) is False
    assert language_changed(ENGLISH, "Paris.") is None
    assert language_changed("42", ENGLISH) is None


@pytest.mark.skipif(not (SHARED_DATA / "alpaca_eval").is_dir(), reason="../shared/data absent")
def test_real_answers_rarely_look_switched() -> None:
    """On AlpacaEval, gpt4_1106_preview against FuseChat-3B: both answer in English."""
    pairs = zip(alpaca("gpt4_1106_preview"), alpaca("FuseChat-Llama-3.2-3B-Instruct"), strict=True)
    changed = [language_changed(p["output"], c["output"]) for p, c in pairs]
    known = [c for c in changed if c is not None]
    assert len(known) > 700 and sum(known) <= 0.01 * len(known)
