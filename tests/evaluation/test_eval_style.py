"""The style classifier trains on a tiny set of real excerpts, saves small and reloads exactly."""

import numpy as np

from evaluation import style as S
from tokenizer import vocab as V


def test_classifier_trains_on_a_tiny_real_set(corpus, tmp_path):
    from training.data import load_split

    _, rows = load_split(corpus, "train")
    want = ("rock", "latin", "baroque")
    picked = [r for s in want for r in [r for r in rows if r["style"] == s][:15]]
    X, y = S.excerpt_dataset(S.corpus_scores(corpus, "train", picked))
    assert X.shape[1] == S.n_features() and set(y.tolist()) == {V.STYLES.index(s) for s in want}
    clf = S.train_classifier(X, y, hidden=16, steps=150)
    assert clf.config["train_accuracy"] > 0.9
    again = S.train_classifier(X, y, hidden=16, steps=150)
    np.testing.assert_array_equal(clf.logits(X), again.logits(X))  # deterministic
    d = clf.save(tmp_path / "clf")
    assert sum(f.stat().st_size for f in d.iterdir()) < 1_000_000
    loaded = S.StyleClassifier.load(d)
    np.testing.assert_allclose(loaded.logits(X), clf.logits(X), rtol=1e-6)
    rep = S.accuracy_report(loaded, X, y)
    assert rep["accuracy"] == clf.config["train_accuracy"] and set(rep["per_style"]) == set(want)
    pairs = S.corpus_scores(corpus, "train", picked[:2])
    assert loaded.predict_styles([S.excerpt(s) for _, s in pairs])[0] in V.STYLES


def test_excerpt_cuts_and_shifts(corpus):
    from training.data import load_split

    _, rows = load_split(corpus, "test")
    r, s = next((r, s) for r, s in S.corpus_scores(corpus, "test", rows[:20]) if s.n_bars > 16)
    e = S.excerpt(s, 8)
    assert e.length == 8 * s.bar_steps and e.notes["onset"].min() >= 0
    assert e.notes["onset"].max() < 8 * s.bar_steps
