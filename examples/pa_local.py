"""Passive-aggressive from plain Python: hashed text features learned online on an
embedded parameter server, scikit-learn style, with progressive validation per batch.

    python examples/pa_local.py
"""

from __future__ import annotations

from models.pa import LocalPA
from models.synthetic_text import make_messages


def main() -> None:
    mail = make_messages(60_000, classes=3, label_noise=0.02, seed=0)
    test = slice(50_000, None)
    labels = ["ham", "newsletter", "spam"]
    y = [labels[c] for c in mail.labels]
    stream = ((mail.words[i:i + 5000], y[i:i + 5000]) for i in range(0, 50_000, 5000))
    with LocalPA(variant="pa1", C=1.0, hash_bits=18, batch_size=256, num_workers=2) as model:
        for step in model.fit_stream(stream, classes=labels):
            print(f"batch {step['batch']}: accuracy {step['accuracy']:.3f}, progressive "
                  f"{step['progressive_accuracy']:.3f}, {step['examples_per_s']:,.0f} messages/s")
    # closed: the weights are in `model`, scoring needs no server
    print(f"held-out accuracy: {model.score(mail.words[test], y[test]):.3f}")
    print("predicted:", model.predict(mail.words[50_000:50_005]), "true:", y[50_000:50_005])


if __name__ == "__main__":
    main()
