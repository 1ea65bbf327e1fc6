"""A spam filter that learns as mail arrives: Spark Structured Streaming reads messages
(hashed word features) from an inbox folder, each micro-batch is learned by
passive-aggressive on the parameter server, and the progressive accuracy (each message
predicted just before it is learned from) is printed per micro-batch. Meanwhile a batch
job scores held-out mail with the weights of the moment.

    python examples/pa_streaming.py                   # local[2], integrated mode
    python examples/pa_streaming.py --ps HOST:PORT    # a `psframework serve` cluster
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.ml.evaluation import MulticlassClassificationEvaluator
from pyspark.sql import SparkSession

from models.pa import StreamingPassiveAggressive
from models.synthetic_text import make_messages

FILES, PER_FILE = 12, 2000


def deliver(mail, inbox: Path) -> None:
    """Mail arrives: a parquet file of PER_FILE messages every half second."""
    for i in range(FILES):
        rows = slice(i * PER_FILE, (i + 1) * PER_FILE)
        table = pa.table({"words": mail.words[rows], "label": mail.labels[rows].astype(float)})
        pq.write_table(table, inbox / f".part-{i:03d}.parquet")
        os.rename(inbox / f".part-{i:03d}.parquet", inbox / f"part-{i:03d}.parquet")  # whole
        time.sleep(0.5)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ps", help="HOST:PORT of a running psframework master (separate mode)")
    args = p.parse_args()
    builder = (SparkSession.builder.appName("pa-streaming-example")
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.shuffle.partitions", "2"))
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # plain python; spark-submit sets the master
        builder = builder.master("local[2]")
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    mail = make_messages(FILES * PER_FILE + 4000, label_noise=0.02, seed=0)  # 1 = spam
    held_out = spark.createDataFrame(pa.table({
        "words": mail.words[FILES * PER_FILE:],
        "label": mail.labels[FILES * PER_FILE:].astype(float)}))
    accuracy = MulticlassClassificationEvaluator(metricName="accuracy")

    def report(entry: dict) -> None:
        print(f"micro-batch {entry['batch_id']:>2}: {entry['examples']:>5} messages, "
              f"accuracy {entry['accuracy']:.3f}, progressive {entry['progressive_accuracy']:.3f}, "
              f"{entry['examples_per_s']:,.0f} messages/s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        inbox = Path(tmp, "inbox")
        inbox.mkdir()
        stream = StreamingPassiveAggressive(spark, classes=[0.0, 1.0], featuresCol="words",
                                            hashBits=18, batchSize=256,
                                            parameterServerHost=args.ps, callback=report)
        try:
            messages = (spark.readStream.schema("words array<string>, label double")
                        .option("maxFilesPerTrigger", 1).parquet(str(inbox)))
            stream.start(messages, trigger={"processingTime": "1 second"},
                         checkpointLocation=str(Path(tmp, "checkpoint")))
            postman = threading.Thread(target=deliver, args=(mail, inbox))
            postman.start()
            halfway = False
            while sum(e["examples"] for e in stream.history) < FILES * PER_FILE:
                time.sleep(1.0)
                if not stream.query.isActive:
                    raise RuntimeError(f"the stream stopped: {stream.query.exception()}")
                if not halfway and len(stream.history) >= FILES // 2:  # the weights of now
                    halfway = True
                    now = accuracy.evaluate(stream.transform(held_out))
                    print(f"held-out accuracy while learning: {now:.3f}", flush=True)
            postman.join()
            final = stream.model()  # a snapshot that needs no server
            print(f"held-out accuracy after {FILES * PER_FILE} messages: "
                  f"{accuracy.evaluate(final.transform(held_out)):.3f}")
        finally:
            stream.stop()
            spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
