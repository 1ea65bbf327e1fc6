"""LDA topic models: collapsed Gibbs sampling with the word-topic counts on the parameter
server, Metropolis-Hastings with alias tables so a token costs O(1) in k (docs/lda.md).

    from models.lda import LocalLDA, LDA
    model = LocalLDA(k=20, iterations=100).fit(X)        # Python: CSR counts
    model = LDA(k=20, maxIter=100).fit(df)               # pyspark.ml: CountVectorizer output

The Spark classes are imported on first use, so that shards, which load the plugin from
this package, start without pyspark and a JVM."""

from models.lda.local import LocalLDA

__all__ = ["LocalLDA", "LDA", "LDAModel"]


def __getattr__(name: str):
    if name in ("LDA", "LDAModel"):
        from models.lda import estimator
        return getattr(estimator, name)
    raise AttributeError(f"module 'models.lda' has no attribute {name!r}")
