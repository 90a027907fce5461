"""The generated IMDB stand-in (utils/review_standins.py): deterministic, balanced, and beyond bag of words."""

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from utils import review_standins as rs


def test_reviews_are_seeded_distinct_and_of_three_kinds():
    rows = rs.reviews(600)
    assert rows == rs.reviews(600) and rows != rs.reviews(600, seed=1)
    assert len({row["text"] for row in rows}) == 600
    assert [row["kind"] for row in rows[:3]] == list(rs.KINDS)
    assert 0.4 < np.mean([row["label"] for row in rows]) < 0.6


@pytest.mark.parametrize("kind", rs.KINDS)
def test_labels_follow_the_rule_of_each_kind(kind):
    import random

    rng = random.Random(0)
    for _ in range(200):
        text, label = rs.review(rng, kind)
        words = text.lower().rstrip(".").replace(",", "").split()
        polar = [int(word in rs.ADJECTIVES[1]) for word in words if word in rs.ADJECTIVES[0] + rs.ADJECTIVES[1]]
        if kind == "plain":
            assert polar == [label]
        elif kind == "negated":
            assert polar == [1 - label]
        else:  # the second clause's adjective decides
            assert len(polar) == 2 and polar[0] != polar[1] and polar[1] == label


def test_every_adjective_and_adverb_appears_in_both_classes():
    rows = rs.reviews(1200)
    for word in (*rs.ADJECTIVES[0], *rs.ADJECTIVES[1], *rs.ADVERBS):
        labels = {row["label"] for row in rows if f" {word} " in f" {row['text'].lower().rstrip('.')} ".replace(",", " ")}
        assert labels == {0, 1}, word


def test_bag_of_words_fails_and_bad_kind_is_refused():
    rows = rs.reviews(1200)
    train, test = rows[:1000], rows[1000:]
    bow = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
                        LogisticRegression(C=4.0, max_iter=1000))
    bow.fit([r["text"] for r in train], [r["label"] for r in train])
    accuracy = np.mean(bow.predict([r["text"] for r in test]) == np.array([r["label"] for r in test]))
    assert accuracy < 0.8
    with pytest.raises(ValueError, match="kind"):
        import random

        rs.review(random.Random(0), "sarcastic")
