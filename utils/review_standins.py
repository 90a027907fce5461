"""Generated movie reviews that a bag of words cannot read: the offline stand-in of IMDB.

Introduced in 02_transformers/08_fine_tuning_and_transfer_learning.ipynb. A third of the reviews are plain
("The plot was really gripping."), a third are negated with a word or more between the negation and the
adjective ("The plot was not really gripping.", "Nobody would say the cast was very bad."), and a third are
mixed, where the clause after "but" (or the main clause after "although") carries the verdict ("The acting
was superb, but the plot was tedious."). Every adjective and every adverb appears in positive and negative
reviews alike, so the label is an interaction of words (negation × polarity, position of the clause), which
a linear model on word and word-pair counts cannot represent; a model that reads word order can.
"""

from __future__ import annotations

import random

SUBJECTS = ("the film", "this movie", "the acting", "the plot", "the script", "the soundtrack", "the ending",
            "the cast", "the dialogue", "the pacing")
ADJECTIVES = {  # label -> adjectives of that polarity
    0: ("dull", "terrible", "boring", "clumsy", "awful", "tedious", "predictable", "lifeless", "painful",
        "forgettable", "bad", "weak"),
    1: ("wonderful", "brilliant", "moving", "delightful", "superb", "charming", "gripping", "beautiful",
        "hilarious", "touching", "good", "great"),
}
ADVERBS = ("really", "very", "quite", "truly", "particularly", "that")  # never next to a polarity-free word
NEGATED = ("{S} was not {adv} {adj}.", "{S} was hardly {adv} {adj}.", "{S} was never {adv} {adj}.",
           "{S} was far from {adv} {adj}.", "Nobody would say {s} was {adv} {adj}.",
           "I did not find {s} {adv} {adj}.")
PLAIN = ("{S} was {adv} {adj}.", "I found {s} {adv} {adj}.", "Everyone would say {s} was {adv} {adj}.")
MIXED = ("{S} was {adv} {adj}, but {s2} was {adv2} {adj2}.", "Although {s} was {adv} {adj}, {s2} was {adv2} {adj2}.")
KINDS = ("plain", "negated", "mixed")


def review(rng: random.Random, kind: str) -> tuple[str, int]:
    """One generated review of `kind` ("plain", "negated" or "mixed") and its label (0 neg, 1 pos)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
    polarity = rng.randint(0, 1)
    subject, adverb, adjective = rng.choice(SUBJECTS), rng.choice(ADVERBS), rng.choice(ADJECTIVES[polarity])
    if kind == "plain":
        return rng.choice(PLAIN).format(S=subject.capitalize(), s=subject, adv=adverb, adj=adjective), polarity
    if kind == "negated":
        return rng.choice(NEGATED).format(S=subject.capitalize(), s=subject, adv=adverb, adj=adjective), 1 - polarity
    second = rng.choice([s for s in SUBJECTS if s != subject])  # mixed: the second clause has the other polarity
    text = rng.choice(MIXED).format(S=subject.capitalize(), s=subject, adv=adverb, adj=adjective, s2=second,
                                    adv2=rng.choice(ADVERBS), adj2=rng.choice(ADJECTIVES[1 - polarity]))
    return text, 1 - polarity  # the verdict is the second clause's


def reviews(n: int, seed: int = 0) -> list[dict]:
    """n distinct reviews {"text", "label", "kind"}: the three kinds in turn, each label with probability 1/2."""
    rng, rows, seen = random.Random(seed), [], set()
    while len(rows) < n:
        kind = KINDS[len(rows) % 3]
        text, label = review(rng, kind)
        if text not in seen:
            seen.add(text)
            rows.append({"text": text, "label": label, "kind": kind})
    return rows
