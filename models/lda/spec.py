"""LDA's hyper-parameters, declared once: `LocalLDA`'s signature and checks and `LDA`'s
Spark Params (pyspark.ml.clustering.LDA's names where it has them) both come from `SPEC`
(`psframework.hyper`). The plugin's config (vocabulary, k, beta) is derived from them."""

from __future__ import annotations

from psframework import Hyper, HyperSpec, hyper

__all__ = ["SPEC", "SAMPLERS"]

SAMPLERS = ("mh", "exact")

SPEC = HyperSpec(
    "lda",
    Hyper("k", int, 20, "number of topics", low=1, spark_default=10),
    Hyper("alpha", float, 0.1, "the documents' symmetric Dirichlet prior on topics",
          low=0, open_low=True, spark="docConcentration"),
    Hyper("beta", float, 0.01, "the topics' symmetric Dirichlet prior on words", low=0,
          open_low=True, spark="topicConcentration"),
    Hyper("iterations", int, 100, "Gibbs sweeps over every token", low=1, spark="maxIter"),
    Hyper("mh_steps", int, 2, "Metropolis-Hastings cycles per token and sweep, each a word "
          "proposal then a doc proposal (LightLDA's mh_step; sampler 'mh')", low=1),
    Hyper("sampler", str, "mh", "mh: alias-table Metropolis-Hastings, O(1) per token in k "
          "(LightLDA, Glint); exact: the collapsed Gibbs conditional, O(k) per token",
          choices=SAMPLERS),
    Hyper("evaluate_every", int, 1, "compute the training perplexity every this many "
          "iterations (0: never; the log-likelihood comes every iteration)", low=0),
    Hyper("num_workers", int, 2, "workers in this process, each sampling its share of the "
          "documents on its own core", low=1, spark=None),
    Hyper("seed", int, 0, "random seed"),
    Hyper("name", str, None, "the model's name on the server (None: a fresh one); a named "
          "model on an external cluster outlives fit, for other clients to read",
          optional=True, spark=None),
    *hyper.local_cluster(),
    hyper.column("features_col", "features", "document-term counts, a Vector per document "
                 "(as CountVectorizer makes)"),
    hyper.column("topic_distribution_col", "topicDistribution", "output: each document's "
                 "topic distribution, folded in with the topics fixed"),
    *hyper.parameter_server(servers=2),
)
