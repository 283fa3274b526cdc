"""The demo pieces: tiny GPT, training step with a controller, corpus packing, table, end to end."""

from pathlib import Path

import numpy as np
import pytest
import torch
from controller_fakes import FakeStream

from mixstream.controllers import ODM
from mixstream.demo.corpus import EOT, corpus_files, tokenize_and_pack, train_tokenizer
from mixstream.demo.model import GPTConfig, TinyGPT, token_losses
from mixstream.demo.run import DemoConfig, RunResult, format_results, run_demo
from mixstream.demo.train import train, train_step

SAMPLE = Path(__file__).parent / "data" / "corpus_sample"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a shared 2-core box: extra intra-op threads only add contention."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_model_shapes_causality_and_size():
    torch.manual_seed(0)
    m = TinyGPT()
    assert 1.5e6 < m.num_params() < 3e6          # "~2M parameters"
    small = TinyGPT(GPTConfig(vocab_size=50, seq_len=16, d_model=32, n_layer=2, n_head=4))
    x = torch.randint(0, 50, (2, 16))
    out = small(x)
    assert out.shape == (2, 16, 50)
    x2 = x.clone()
    x2[:, 10:] = (x2[:, 10:] + 1) % 50                # change the future only
    assert torch.allclose(small(x2)[:, :10], out[:, :10], atol=1e-6)
    assert token_losses(small, x.to(torch.uint16)).shape == (2, 15)
    with pytest.raises(ValueError, match="seq_len"):
        small(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(d_model=30, n_head=4)


def test_train_step_learns_and_feeds_controller():
    torch.manual_seed(0)
    m = TinyGPT(GPTConfig(vocab_size=16, seq_len=8, d_model=32, n_layer=1, n_head=2))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    s = FakeStream(["a", "b"])
    mixer = ODM(s, warmup=0)
    batch = {"input_ids": torch.arange(9).repeat(4, 1) % 16, "domain": torch.tensor([0, 1, 0, 1])}
    first = train_step(m, opt, batch, mixer)
    res = train(m, opt, iter([batch] * 30), max_steps=30, mixer=mixer)
    assert res.steps == 30 and res.losses[-1] < first / 3 and mixer.step == 31
    assert len(s.log) == 1 and mixer.reward.min() > 0


def test_pack_and_tokenizer():
    texts = ["hello world " * 20, "def f(x):\n    return x\n" * 10]
    tok = train_tokenizer(texts, 300)
    rows = tokenize_and_pack(tok, texts, 15)
    assert rows.dtype == np.uint16 and rows.shape[1] == 16
    flat = rows.ravel().tolist()
    assert tok.token_to_id(EOT) in flat
    assert tok.decode(flat[:10]).startswith("hello world")


def test_corpus_files_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        corpus_files(tmp_path / "nope")
    (tmp_path / "one.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(ValueError, match="at least two"):
        corpus_files(tmp_path)
    assert len(corpus_files(SAMPLE)) == 8


def test_format_table():
    a = RunResult("uniform", 5, 1.0, 10.0, {"x": 2.0, "y": 3.0}, {"x": .5, "y": .5}, "")
    b = RunResult("odm", 5, 1.0, 10.0, {"x": 2.5, "y": 2.0}, {"x": .3, "y": .7}, "")
    t = format_results([a, b])
    assert "+0.500" in t and "-1.000" in t and "0.700" in t
    assert t.splitlines()[-2].split() == ["mean", "2.500", "2.250", "-0.250"]


def test_demo_end_to_end_small(tmp_path):
    cfg = DemoConfig(workdir=str(tmp_path), corpus=str(SAMPLE), controller="odm", seeds=2,
                     steps=6, batch_size=4, seq_len=32, vocab_size=300, evals=1, val_rows=4,
                     noise_domains=1, model={"d_model": 32, "n_layer": 1, "n_head": 2})
    said: list[str] = []
    runs = run_demo(cfg, say=said.append)
    assert [(r.name, r.seed) for r in runs] == [("uniform", 0), ("odm", 0), ("uniform", 1),
                                                 ("odm", 1)]
    assert all(r.steps == 6 for r in runs)
    # the target is the text domains only; the noise domain is trained on, never validated
    assert all(set(r.val) == set(runs[0].val) and len(r.val) == 8 for r in runs)
    assert "noise1" in runs[1].final_weights and "noise1" not in runs[1].val
    for r in runs:
        assert Path(r.log).exists() and Path(r.log).name == f"{r.name}_seed{r.seed}.jsonl"
    assert any("per-domain validation loss" in s for s in said)
    line = next(s for s in said if s.startswith("odm - uniform"))
    assert "95 % CI [" in line and "2 paired seeds" in line
    assert any(s.startswith("verdict: odm is ") for s in said)


def test_demo_paired_ci():
    from mixstream.demo.run import mean_ci
    m, h = mean_ci([-0.1, -0.2, -0.3])
    assert m == pytest.approx(-0.2) and h == pytest.approx(4.303 * 0.1 / 3 ** 0.5, rel=1e-3)


def test_demo_cli_registered_and_validates():
    from mixstream.cli.main import build_parser, main
    args = build_parser().parse_args(["demo", "--controller", "odm", "--steps", "5"])
    assert args.controller == "odm" and callable(args.func) and args.seeds == 5
    assert build_parser().parse_args(["demo"]).controller == "fastmix"   # the demo's default
    with pytest.raises(SystemExit, match="--steps must be > 0"):
        main(["demo", "--steps", "0"])
    with pytest.raises(SystemExit, match="--seeds must be > 0"):
        main(["demo", "--seeds", "0"])
