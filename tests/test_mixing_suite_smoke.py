"""The mixing diagnostic suite's plumbing on a tiny configuration (no quality numbers here).

Runs one diagnostic with every method for two seeds at a few steps, through the same command a
user runs (``python -m benchmarks.mixing run ... --smoke``), and checks the outputs' shape: a
row per method, CIs and weights on the simplex. The suite's numbers live in
``benchmarks/results/mixing/`` and are produced by the full run, never in CI.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.mixing.__main__ import main  # noqa: E402
from benchmarks.mixing.chains import blend, noise, random_chain  # noqa: E402
from benchmarks.mixing.stats import frac_oracle, mean_ci  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_chains_have_their_known_entropy():
    rng = np.random.default_rng(0)
    assert noise(16).entropy_rate() == pytest.approx(np.log(16))
    c = random_chain(2, 8, 0.1, rng)
    assert c.probs.shape == (64, 8) and np.allclose(c.probs.sum(1), 1)
    x = c.sample(50, 40, rng)
    assert x.shape == (50, 40) and x.min() >= 0 and x.max() < 8
    b = blend(random_chain(1, 8, 0.1, rng), random_chain(1, 8, 0.1, rng), 0.7)
    assert np.allclose(b.probs.sum(1), 1)
    assert 0 < c.entropy_rate() < np.log(8)


def test_stats_paired():
    m, h = mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and h == pytest.approx(2.484, abs=1e-3)   # t(0.975, 2) * 1 / sqrt(3)
    u = np.array([2.0, 2.1, 2.2])
    f, lo, hi = frac_oracle(u - 0.05, u, u - 0.1)
    assert f == pytest.approx(0.5) and lo == pytest.approx(0.5) and hi == pytest.approx(0.5)


def test_suite_smoke_every_method(tmp_path):
    out = tmp_path / "out"
    rc = main(["run", "target", "--smoke", "--seeds", "2", "--workers", "1", "--quiet",
               "--work", str(tmp_path / "work"), "--out", str(out)])
    assert rc == 0
    md = (out / "target.md").read_text()
    for m in ("uniform", "proportional", "odm", "doremi", "ado", "aioli", "fastmix", "acodm",
              "opmix", "dml", "oracle"):
        assert f"| {m} " in md or f"**{m}**" in md, m
    res = json.loads((out / "target.json").read_text())
    for seed_res in res["results"]["methods"].values():
        for m, r in seed_res.items():
            w = np.asarray(r["trajectory"]["weights"])
            assert np.all(w >= -1e-9) and np.allclose(w.sum(1), 1, atol=1e-6), m
            assert np.isfinite(r["target_test"]) and r["extra"] >= 0
    assert (out / "summary.md").exists()
