"""mixstream.integrations.lightning: Lightning on a MixLoader, in-process.

The kill -9 and DDP (2 CPU processes) versions run the example script (tests/test_examples.py);
here: exact resume from Lightning's own checkpoints without the off-by-one, what the
controller sees per optimizer step, and the clear errors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pl = pytest.importorskip("lightning.pytorch")

from mixstream import MixLoader, MixStream, write_shards  # noqa: E402
from mixstream.controllers import ODM  # noqa: E402
from mixstream.controllers.base import Controller, Requirements  # noqa: E402
from mixstream.integrations.lightning import MixStreamCallback  # noqa: E402
from mixstream.losses import per_sequence_loss_and_tokens  # noqa: E402

VOCAB, SEQ, BATCH = 257, 16, 4


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("pl_shards")
    rng = np.random.default_rng(0)
    out = {}
    for name, n in (("a", 400), ("b", 300), ("c", 200)):
        tokens = rng.integers(0, VOCAB, (n, SEQ), dtype=np.uint16)
        write_shards({"input_ids": tokens}, root / name, domain=name, token_column="input_ids",
                     rows_per_block=50)
        out[name] = str(root / name)
    return out


class LM(pl.LightningModule):
    """A bigram LM; records what every batch trained on. ``returns``: what training_step
    hands to the callback (``logits``, ``per_sequence``, or ``loss`` only)."""

    def __init__(self, returns: str = "logits") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(VOCAB, 16)  # takes the int64 token column as it comes
        self.out = torch.nn.Linear(16, VOCAB)
        self.returns = returns
        self.records: list = []

    def training_step(self, batch: dict, batch_idx: int) -> dict:
        tokens = batch["input_ids"]
        logits = self.out(self.emb(tokens))
        per_seq, counted = per_sequence_loss_and_tokens(logits, tokens)
        loss = per_seq.mean()
        self.records.append((batch_idx, tokens.clone(), batch["domain"].tolist(),
                             batch["index"].tolist(), loss.item()))
        if self.returns == "logits":
            return {"loss": loss, "logits": logits}
        if self.returns == "per_sequence":
            return {"loss": loss, "per_sequence_loss": per_seq, "tokens": counted}
        return {"loss": loss}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-2)


class Recorder(Controller):
    requires = Requirements(train_losses=True, loss_weighting="token")

    def __init__(self, stream: MixStream) -> None:
        super().__init__(stream)
        self.seen: list = []

    def update(self, fb):  # type: ignore[no-untyped-def]
        self.seen.append(fb)
        return None


def fit(shards: dict, root, *, steps: int, ckpt: str | None = None, callback: bool = True,
        returns: str = "logits", accumulate: int = 1, controller: type = ODM):
    stream = MixStream(shards, seed=3)
    loader = MixLoader(stream, batch_size=BATCH)
    ctrl = controller(stream, warmup=1) if controller is ODM else controller(stream)
    saver = pl.callbacks.ModelCheckpoint(dirpath=root, every_n_train_steps=3, save_top_k=-1,
                                         filename="{step}")
    callbacks = [MixStreamCallback(loader), saver] if callback else [saver]
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         accumulate_grad_batches=accumulate, callbacks=callbacks)
    module = LM(returns)
    trainer.fit(module, train_dataloaders=loader, ckpt_path=ckpt)
    return module, stream, ctrl


@pytest.fixture(scope="module")
def runs(shards: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("pl_runs")
    full = fit(shards, root / "full", steps=6)
    first = fit(shards, root / "cut", steps=3)
    resumed = fit(shards, root / "cut", steps=6, ckpt=str(root / "cut" / "step=3.ckpt"))
    return {"full": full, "first": first, "resumed": resumed, "root": root}


def test_resume_is_exact_no_off_by_one(runs: dict) -> None:
    """Issue: without glue resume restarted at batch 0 with uniform weights; with 15 lines of
    glue the step-10 checkpoint recorded 11 batches and one batch was never trained."""
    (full, full_stream, full_ctrl), (first, _, _), (resumed, stream, ctrl) = (
        runs["full"], runs["first"], runs["resumed"])
    got = first.records + resumed.records
    assert len(got) == len(full.records) == 6
    for a, b in zip(got, full.records, strict=True):
        assert torch.equal(a[1], b[1])
        assert a[2:] == b[2:], "domains, indices or loss differ"
    assert full_ctrl.weights != {d: 1 / 3 for d in full_stream.domains}  # ODM moved
    assert ctrl.weights == full_ctrl.weights
    assert stream.weight_log == full_stream.weight_log


def test_checkpoint_records_the_trained_position(runs: dict) -> None:
    ckpt = torch.load(runs["root"] / "cut" / "step=3.ckpt", weights_only=True)
    state = ckpt["callbacks"]["MixStreamCallback"]["loader"]
    assert state["consumed_batches"] == 3  # 3 trained; Lightning had fetched 4
    # MixLoader is a stateful loader: Lightning keeps its own copy, taken at the same moment
    loops = ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loops == [state]


def test_without_the_callback_lightning_checkpoints_are_refused(shards: dict, tmp_path) -> None:
    """Why the callback exists: Lightning stores the stateful MixLoader by itself, but at the
    batches it fetched (one ahead), so a resume would skip a batch: saving is refused with the
    fix instead of a silent skip."""
    with pytest.raises(RuntimeError, match="MixStreamCallback"):
        fit(shards, tmp_path / "cut", steps=3, callback=False)


def test_one_feedback_per_optimizer_step(shards: dict, tmp_path) -> None:
    _, stream, rec = fit(shards, tmp_path, steps=2, accumulate=3, controller=Recorder,
                         returns="per_sequence")
    assert len(rec.seen) == 2
    for fb in rec.seen:
        assert fb.counts.sum() == 3 * BATCH
        assert fb.tokens.sum() == 3 * BATCH * (SEQ - 1)
    assert stream.trained_batches == 6  # Lightning fetched one more
    assert stream.consumed_batches == 7


def test_losses_missing_is_a_clear_error(shards: dict, tmp_path) -> None:
    with pytest.raises(ValueError, match="ODM need per-sequence losses: return"):
        fit(shards, tmp_path, steps=2, returns="loss")


def test_callback_on_another_loader_is_refused(shards: dict, tmp_path) -> None:
    stream = MixStream(shards)
    other = MixLoader(MixStream(shards), batch_size=BATCH)
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", devices=1, logger=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, callbacks=[MixStreamCallback(other)])
    with pytest.raises(RuntimeError, match="same MixLoader"):
        trainer.fit(LM("loss"), train_dataloaders=MixLoader(stream, batch_size=BATCH))


def staged_fit(shards: dict, root, *, steps: int, ckpt: str | None = None):
    from mixstream.stages import Stage, StagePlan

    stream = MixStream(shards, seed=3)
    loader = MixLoader(stream, batch_size=BATCH)
    plan = StagePlan(stream, [Stage("warm", steps=3, weights={"a": 1}),
                              Stage("mix", steps=3, weights={"a": 1, "b": 1, "c": 1},
                                    controller=lambda s: ODM(s, warmup=1)),
                              Stage("last", weights={"c": 1})])
    saver = pl.callbacks.ModelCheckpoint(dirpath=root, every_n_train_steps=4, save_top_k=-1,
                                         filename="{step}")
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[MixStreamCallback(loader), saver])
    module = LM("logits")
    trainer.fit(module, train_dataloaders=loader, ckpt_path=ckpt)
    return module, stream, plan


def test_a_stage_plan_under_lightning_resumes_mid_stage(shards: dict, tmp_path) -> None:
    """Issue: stages usable from the trainer integrations — the active stage's controller gets
    Lightning's feedback, and a checkpoint inside the 'mix' stage resumes exactly."""
    full, _, plan = staged_fit(shards, tmp_path / "full", steps=8)
    assert plan.stage.name == "last"
    assert all(set(r[2]) == {0} for r in full.records[:3])  # 'warm': domain a only
    assert all(set(r[2]) == {2} for r in full.records[6:])  # 'last': domain c only
    staged_fit(shards, tmp_path / "cut", steps=4)  # checkpoint at step 4: inside 'mix'
    resumed, _, plan2 = staged_fit(shards, tmp_path / "cut", steps=8,
                                   ckpt=str(tmp_path / "cut" / "step=4.ckpt"))
    assert plan2.stage.name == "last"
    for a, b in zip(full.records[4:], resumed.records):
        assert torch.equal(a[1], b[1]) and a[2] == b[2] and a[3] == b[3]
