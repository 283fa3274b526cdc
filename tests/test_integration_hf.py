"""mixstream.integrations.hf: Hugging Face Trainer on a MixLoader, in-process.

The kill -9 / torchrun versions of the resume test run the example script
(tests/test_examples.py); here: exact resume with Trainer's default arguments, what the
controller sees per optimizer step, which tokens count, and the clear errors.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from transformers import (  # noqa: E402
    GPT2Config,
    GPT2LMHeadModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from mixstream import MixLoader, MixStream, write_shards  # noqa: E402
from mixstream.controllers import ODM, DoReMi  # noqa: E402
from mixstream.controllers.base import Controller, Requirements  # noqa: E402
from mixstream.integrations.hf import STATE_FILE, MixTrainer  # noqa: E402

VOCAB, SEQ = 257, 32


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("hf_shards")
    rng = np.random.default_rng(0)
    out = {}
    for name, n in (("a", 400), ("b", 300), ("c", 200)):
        tokens = rng.integers(0, VOCAB - 1, (n, SEQ), dtype=np.uint16)
        write_shards({"input_ids": tokens}, root / name, domain=name, token_column="input_ids",
                     rows_per_block=50)
        out[name] = str(root / name)
    return out


def tiny_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=SEQ, n_embd=32, n_layer=1,
                                      n_head=2, bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1))


def arguments(out: str, **kw: object) -> TrainingArguments:
    base: dict = dict(output_dir=out, max_steps=6, save_steps=3, learning_rate=1e-3,
                      use_cpu=True, report_to="none", logging_steps=100, seed=0,
                      disable_tqdm=True)
    base.update(kw)
    return TrainingArguments(**base)


class Recorder(Controller):
    """Keeps every step's feedback; never changes the weights."""

    requires = Requirements(train_losses=True)

    def __init__(self, stream: MixStream) -> None:
        super().__init__(stream)
        self.seen: list = []

    def update(self, fb):  # type: ignore[no-untyped-def]
        self.seen.append(fb)
        return None


class Traced(MixTrainer):
    """Records what every micro-batch trained on (tokens, domains, indices, loss, weights)."""

    records: list

    def training_step(self, model, inputs, num_items_in_batch=None):  # type: ignore[no-untyped-def]
        weights = dict(self.stream.weights)
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.records.append((self.state.global_step + 1, inputs["input_ids"].clone(),
                             inputs["domain"].tolist(), inputs["index"].tolist(), loss.item(),
                             weights))
        return loss


class StopAt(TrainerCallback):
    """Ends training after ``step`` (the schedule still runs to max_steps: a cut-short run)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        if state.global_step == self.step:
            control.should_training_stop = True


def run(shards: dict, out: str, *, resume: bool = False, stop_at: int | None = None,
        **kw: object) -> Traced:
    args = arguments(out, **kw)
    stream = MixStream(shards, seed=1)
    loader = MixLoader(stream, batch_size=4)
    ODM(stream, warmup=1)
    trainer = Traced(model=tiny_gpt2(), args=args, train_loader=loader,
                     callbacks=[StopAt(stop_at)] if stop_at else None)
    trainer.records = []
    trainer.train(resume_from_checkpoint=True if resume else None)
    return trainer


@pytest.fixture(scope="module")
def runs(shards: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An uninterrupted 6-step run; a run stopped after its step-3 checkpoint (2 micro-batches
    per step in both); the second resumed from that checkpoint with Trainer's defaults."""
    root = tmp_path_factory.mktemp("hf_runs")
    full = run(shards, str(root / "full"), gradient_accumulation_steps=2)
    first = run(shards, str(root / "cut"), stop_at=3, gradient_accumulation_steps=2)
    resumed = run(shards, str(root / "cut"), resume=True, gradient_accumulation_steps=2)
    return {"full": full, "first": first, "resumed": resumed, "root": root}


def test_resume_is_exact_with_default_arguments(runs: dict) -> None:
    """Issue: without glue, Trainer's skip replays through a new DataLoader, the controller
    restarts from uniform and 3 of 10 resumed batches matched; with ignore_data_skip left False
    a worker raised LateWeightChangeError. Now: default arguments, every batch identical."""
    full, first, resumed = runs["full"], runs["first"], runs["resumed"]
    # the user left ignore_data_skip at its default; MixTrainer turned Trainer's skip off
    assert TrainingArguments(output_dir=str(runs["root"])).ignore_data_skip is False
    assert [r[0] for r in first.records] == [1, 1, 2, 2, 3, 3]
    assert [r[0] for r in resumed.records] == [4, 4, 5, 5, 6, 6]
    for a, b in zip(first.records + resumed.records, full.records, strict=True):
        assert a[0] == b[0]
        assert torch.equal(a[1], b[1]), f"step {a[0]}: other tokens"
        assert a[2:] == b[2:], f"step {a[0]}: domains, indices, loss or weights differ"
    weights = [r[5] for r in full.records]
    assert weights[-1] != weights[0]  # ODM really moved the mixture during the run
    assert resumed.stream.weight_log == full.stream.weight_log
    assert resumed.stream.weights == full.stream.weights


def test_checkpoint_state_is_plain_and_at_the_trained_position(runs: dict) -> None:
    path = runs["root"] / "cut" / "checkpoint-3" / STATE_FILE.format(rank=0)
    state = torch.load(path, weights_only=True)  # plain Python: the safe loader accepts it
    assert state["consumed_batches"] == 6  # 3 optimizer steps x 2 micro-batches
    assert state["world_size"] == 1 and state["batch_size"] == 4
    assert "ODM" in state["attached"]


def test_checkpoint_without_stream_state_is_a_clear_error(shards: dict, runs: dict,
                                                          tmp_path) -> None:
    shutil.copytree(runs["root"] / "cut" / "checkpoint-3", tmp_path / "checkpoint-3")
    os.remove(tmp_path / "checkpoint-3" / STATE_FILE.format(rank=0))
    with pytest.raises(FileNotFoundError, match="checkpoint-3 has no mixstream state"):
        run(shards, str(tmp_path), resume=True)


def test_gradient_accumulation_one_feedback_per_optimizer_step(shards: dict, tmp_path) -> None:
    stream = MixStream(shards, seed=1)
    loader = MixLoader(stream, batch_size=4)
    rec = Recorder(stream)
    trainer = MixTrainer(model=tiny_gpt2(), train_loader=loader,
                         args=arguments(str(tmp_path), max_steps=2, save_steps=100,
                                        gradient_accumulation_steps=3))
    trainer.train()
    assert len(rec.seen) == 2
    for fb in rec.seen:  # all 3 micro-batches of the step, every target of every sequence
        assert fb.counts.sum() == 12
        assert fb.tokens.sum() == 12 * (SEQ - 1)
        assert fb.has_tokens and np.isfinite(fb.tok_mean).all()
    assert stream.consumed_batches == 6


def test_feedback_counts_the_tokens_the_training_loss_counts(shards: dict, tmp_path) -> None:
    """Padding, loss_mask and -100 labels are excluded from the controller's losses exactly as
    from Trainer's loss; a sequence without targets is left out (not reported as loss 0)."""
    stream = MixStream(shards)
    trainer = MixTrainer(model=tiny_gpt2(), train_loader=MixLoader(stream, batch_size=4),
                         args=arguments(str(tmp_path)))
    model = trainer.model.train()
    for p in model.modules():  # no dropout: one forward gives the reference
        if isinstance(p, torch.nn.Dropout):
            p.p = 0.0
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB - 1, (4, SEQ), generator=g, dtype=torch.int64)
    attn = torch.ones(4, SEQ, dtype=torch.int64)
    attn[1, 20:] = 0                       # padded tail
    loss_mask = torch.ones(4, SEQ, dtype=torch.int64)
    loss_mask[2, :10] = 0                  # a prompt
    loss_mask[3, :] = 0                    # nothing to learn from
    batch = {"input_ids": ids.to(torch.uint16), "attention_mask": attn, "loss_mask": loss_mask,
             "domain": torch.tensor([0, 1, 2, 0]), "index": torch.arange(4)}
    loss = trainer.compute_loss(model, batch)
    per_seq = torch.cat(trainer._losses._loss)
    tokens = torch.cat(trainer._losses._tokens)
    domain = torch.cat(trainer._losses._domain)
    assert tokens.tolist() == [SEQ - 1, 19, SEQ - 10]  # sequence 3 has no target: left out
    assert domain.tolist() == [0, 1, 2]
    token_mean = float((per_seq * tokens).sum() / tokens.sum())
    assert token_mean == pytest.approx(float(loss.detach()), rel=1e-5)


def test_unbound_stream_in_plain_trainer_is_batched_once(shards: dict, tmp_path) -> None:
    """Issue: MixStream(batch_size=8) as train_dataset gave the model 64 rows per step."""
    rows = []
    model = tiny_gpt2()
    model.register_forward_pre_hook(lambda m, a, kw: rows.append(tuple(kw["input_ids"].shape)),
                                    with_kwargs=True)

    def collate(samples: list) -> dict:
        ids = torch.stack([torch.as_tensor(s["input_ids"]) for s in samples])
        return {"input_ids": ids, "labels": ids}

    trainer = Trainer(model=model, train_dataset=MixStream(shards, batch_size=8),
                      data_collator=collate,
                      args=arguments(str(tmp_path), max_steps=2, save_steps=100,
                                     per_device_train_batch_size=8))
    trainer.train()
    assert rows == [(8, SEQ), (8, SEQ)]  # not 8 batches of 8


def test_plain_trainer_on_a_loader_bound_stream_is_refused(shards: dict, tmp_path) -> None:
    """Trainer's own DataLoader around a MixLoader's stream would re-batch and skip data behind
    the loader's count: refused with the fix, never desynchronised silently."""
    stream = MixStream(shards)
    MixLoader(stream, batch_size=4)
    trainer = Trainer(model=tiny_gpt2(), train_dataset=stream,
                      args=arguments(str(tmp_path), max_steps=2))
    with pytest.raises(RuntimeError, match="MixLoader"):
        trainer.train()


def test_controller_the_trainer_cannot_serve_is_refused(shards: dict, tmp_path) -> None:
    stream = MixStream(shards)
    loader = MixLoader(stream, batch_size=4)
    DoReMi(stream)
    trainer = MixTrainer(model=tiny_gpt2(), train_loader=loader, args=arguments(str(tmp_path)))
    with pytest.raises(ValueError, match="DoReMi needs reference-model losses"):
        trainer.train()


def test_wrong_topology_is_refused(shards: dict, tmp_path) -> None:
    stream = MixStream(shards, rank=1, world_size=2)
    trainer = MixTrainer(model=tiny_gpt2(), train_loader=MixLoader(stream, batch_size=4),
                         args=arguments(str(tmp_path)))
    with pytest.raises(RuntimeError, match="rank 1 of 2 but Trainer runs as rank 0 of 1"):
        trainer.train()


def test_train_loader_must_be_a_mixloader(shards: dict, tmp_path) -> None:
    with pytest.raises(TypeError, match="mixstream.MixLoader"):
        MixTrainer(model=tiny_gpt2(), args=arguments(str(tmp_path)),
                   train_loader=torch.utils.data.DataLoader(MixStream(shards), batch_size=4))
