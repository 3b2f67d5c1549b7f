"""corpus_scores: sacreBLEU's documented example values, perfect and empty output, errors."""

import pytest

from zoo.mbart.metrics import corpus_scores

# The example in sacreBLEU's README ("Using SacreBLEU from Python"), two reference streams:
# BLEU = 48.53, chrF2 = 59.73.
README_HYPOTHESES = [
    "The dog bit the man.",
    "It wasn't surprising.",
    "The man had just bitten him.",
]
README_REFERENCES = [
    ["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
    ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."],
]


def test_scores_equal_sacrebleu_readme_values():
    scores = corpus_scores(README_HYPOTHESES, README_REFERENCES)
    assert round(scores["bleu"], 2) == 48.53
    assert round(scores["chrf"], 2) == 59.73


def test_one_reference_per_hypothesis_is_one_stream():
    single = corpus_scores(README_HYPOTHESES, README_REFERENCES[0])
    assert single == corpus_scores(README_HYPOTHESES, [README_REFERENCES[0]])
    assert single["bleu"] < corpus_scores(README_HYPOTHESES, README_REFERENCES)["bleu"]


def test_perfect_match_scores_100():
    refs = ["Die Datei konnte nicht geöffnet werden.", "Zugriff verweigert", "Größe: 12 MB"]
    assert corpus_scores(refs, refs) == pytest.approx({"bleu": 100.0, "chrf": 100.0})


def test_empty_hypotheses_score_zero_and_lower_a_corpus():
    refs = ["Die Datei konnte nicht geöffnet werden.", "Zugriff verweigert"]
    assert corpus_scores(["", ""], refs) == {"bleu": 0.0, "chrf": 0.0}
    partial = corpus_scores([refs[0], ""], refs)
    assert 0.0 < partial["bleu"] < 100.0 and 0.0 < partial["chrf"] < 100.0


def test_bad_inputs_raise_with_the_counts():
    with pytest.raises(ValueError, match="empty test set"):
        corpus_scores([], [])
    with pytest.raises(ValueError, match="references\\[0\\] has 1 segments, hypotheses 2"):
        corpus_scores(["a", "b"], ["a"])
    with pytest.raises(TypeError, match=r"hypotheses\[1\] is NoneType None, not str"):
        corpus_scores(["a", None], ["a", "b"])
