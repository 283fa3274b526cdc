"""Converting at scale: Parquet written by Spark (local mode), indexed, then streamed.

Spark writes a directory of part files (plus ``_SUCCESS`` and ``.crc`` side files);
``mixstream-shard index`` builds the manifest from the footers without rewriting data, and
MixStream streams it like any native domain.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from mixstream import MixLoader, MixStream
from mixstream.cli.shard import main as shard_main

pyspark = pytest.importorskip("pyspark")
if shutil.which("java") is None:
    pytest.skip("Spark needs a Java runtime", allow_module_level=True)


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[2]").appName("mixstream-test")
               .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "4")
               .config("spark.driver.bindAddress", "127.0.0.1").getOrCreate())
    yield session
    session.stop()


def test_spark_parquet_indexed_and_streamed(spark, tmp_path):
    from pyspark.sql import functions as F

    out = {}
    for d, (name, n) in enumerate({"web": 3000, "code": 1000}.items()):
        df = (spark.range(n).withColumn("id", F.col("id") + d * 1_000_000)
              .withColumn("input_ids", F.array(*[(F.col("id") * 3 + k) % 50_000 for k in range(8)]))
              .withColumn("text", F.concat(F.lit(f"{name}-"), F.col("id").cast("string"))))
        path = str(tmp_path / name)
        df.repartition(3).write.option("parquet.block.size", 16 * 1024).parquet(path)
        assert os.path.exists(os.path.join(path, "_SUCCESS"))
        assert shard_main(["index", path, "--domain", name]) == 0
        out[name] = path
    stream = MixStream(out, weights={"web": 0.75, "code": 0.25}, seed=0)
    ids, doms = [], []
    for step, batch in enumerate(MixLoader(stream, batch_size=40)):
        ids.append(batch["id"].numpy())
        doms.append(batch["domain"].numpy())
        # Spark writes arrays as variable-length lists: rows come out as a list of tensors
        assert len(batch["input_ids"]) == 40 and all(len(t) == 8 for t in batch["input_ids"])
        assert len(batch["text"]) == 40
        if step + 1 == 100:  # 4000 samples: exactly one epoch of both domains
            break
    ids, doms = np.concatenate(ids), np.concatenate(doms)
    assert (ids // 1_000_000 == doms).all()
    assert sorted(ids[doms == 0]) == list(range(3000))
    assert sorted(ids[doms == 1]) == list(range(1_000_000, 1_001_000))
