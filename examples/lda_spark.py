"""LDA from Spark: sentences drawn from a few hand-written topics go through Tokenizer and
CountVectorizer into LDA, which executors sample on the parameter server; then each
topic's top words (from the CountVectorizerModel's vocabulary) and a few documents'
topic distributions.

    python examples/lda_spark.py                              # local[2], integrated mode
    spark-submit --master 'local[2]' examples/lda_spark.py
    python examples/lda_spark.py --ps HOST:PORT               # a `psframework serve` cluster
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import numpy as np
from pyspark.ml import Pipeline
from pyspark.ml.feature import CountVectorizer, Tokenizer
from pyspark.sql import SparkSession

from models.lda import LDA

TOPICS = {
    "space": "rocket orbit launch planet moon astronaut telescope galaxy satellite mars "
             "gravity comet crew station",
    "cooking": "recipe oven flour butter garlic onion simmer sauce bake pepper salt dough "
               "roast soup",
    "football": "goal striker keeper match league penalty referee coach season stadium "
                "tackle fans cup derby",
    "finance": "market stock bond interest inflation bank investor dividend shares profit "
               "loan currency fund trading",
    "gardening": "soil seeds compost roses tomato prune water weeds bloom shovel hedge lawn "
                 "mulch greenhouse",
}
FILLER = "the a of and to in is it that with for on".split()  # in every topic's sentences


def sentences(n: int, seed: int = 0) -> list[tuple[int, str, str]]:
    """(id, main topic, text): each document mostly one topic, some of a second, and
    filler words."""
    rng = np.random.default_rng(seed)
    names = list(TOPICS)
    words = {t: TOPICS[t].split() for t in names}
    docs = []
    for d in range(n):
        main, other = rng.choice(len(names), 2, replace=False)
        length = int(rng.integers(20, 40))
        source = rng.choice(3, length, p=[0.7, 0.15, 0.15])  # main topic, other, filler
        tokens = [rng.choice(words[names[main]]) if s == 0 else
                  rng.choice(words[names[other]]) if s == 1 else rng.choice(FILLER)
                  for s in source]
        docs.append((d, names[main], " ".join(tokens)))
    return docs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ps", help="HOST:PORT of a running psframework master (separate mode)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("models.lda").setLevel(logging.INFO)  # each iteration's log-likelihood
    builder = (SparkSession.builder.appName("lda-example")
               .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "2")
               .config("spark.ui.showConsoleProgress", "false"))
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # plain python; spark-submit sets the master
        builder = builder.master("local[2]")
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    try:
        df = spark.createDataFrame(sentences(1000), "id long, topic string, text string")
        pipeline = Pipeline(stages=[
            Tokenizer(inputCol="text", outputCol="words"),
            CountVectorizer(inputCol="words", outputCol="features", minDF=2),
            LDA(k=len(TOPICS), maxIter=50, docConcentration=0.5, topicConcentration=0.05,
                seed=1, evaluateEvery=10, parameterServerHost=args.ps),
        ])
        model = pipeline.fit(df)
        vocabulary = model.stages[1].vocabulary
        lda = model.stages[2]
        print(f"{lda.vocabSize()} words, {lda.getK()} topics; top words per topic:")
        for row in lda.describeTopics(8).orderBy("topic").collect():
            print(f"  topic {row.topic}: "
                  + " ".join(vocabulary[i] for i in row.termIndices))
        out = model.transform(df)  # words, features (counts) and topicDistribution
        print("topic distributions of a few documents:")
        for row in out.orderBy("id").limit(5).collect():
            theta = " ".join(f"{x:.2f}" for x in row.topicDistribution)
            print(f"  document {row.id} ({row.topic}): {theta}")
        print(f"log perplexity of the training documents: {lda.logPerplexity(out):.3f}")
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
