"""LDA from plain Python: topics sampled on an embedded parameter server from a corpus drawn
from known topics, then compared with the truth, folded in on held-out documents and
scored by document completion.

    python examples/lda_local.py
"""

from __future__ import annotations

import numpy as np

from models.lda import LocalLDA
from models.lda.evaluate import completion_perplexity
from models.synthetic_topics import make_corpus, match_topics


def main() -> None:
    corpus = make_corpus(3000, vocabulary=5000, topics=10, doc_length=150, seed=0)
    train, held = corpus.docs[:2700], corpus.docs[2700:]
    model = LocalLDA(k=10, iterations=100, num_workers=2, seed=0)  # a progress bar on stderr
    model.fit(train)
    last = model.history_[-1]
    print(f"log-likelihood {last['log_likelihood']:,.0f}, training perplexity "
          f"{last['perplexity']:.0f}, {last['tokens_per_s']:,.0f} tokens/s")
    _, distance = match_topics(model.topic_word_, corpus.topic_word)
    print(f"Hellinger distance to the true topics: median {np.median(distance):.3f}, "
          f"worst {distance.max():.3f} (two true topics are ~0.85 apart)")
    for k, words in enumerate(model.top_words(8)[:5]):
        print(f"topic {k}: words {words}")
    theta = model.transform(held[:3])
    print("held-out documents' main topics:", theta.argmax(axis=1), "weights",
          np.round(theta.max(axis=1), 2))
    scored = completion_perplexity(held, model.topic_word_, model.alpha)
    print(f"held-out perplexity (document completion): {scored['perplexity']:.0f} "
          f"(vocabulary {held.shape[1]})")


if __name__ == "__main__":
    main()
