"""Lightning on a MixLoader: a tiny GPT (pure PyTorch, built from a config) on three domains of
real text, ODM retuning the mixture, Lightning checkpoints that resume exactly.

    python examples/train_lightning.py --out runs/pl --steps 40 --save-every 10
    python examples/train_lightning.py --out runs/pl --steps 60 --resume      # continues exactly
    python examples/train_lightning.py --out runs/pl2 --devices 2             # DDP, 2 CPU processes

The mixstream lines are marked ``# mixstream``; the rest is an ordinary Lightning script.
``--trace``/``--kill-at`` exist for the resume tests (tests/test_examples.py).
"""

from __future__ import annotations

import os

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from common import SEQ_LEN, VOCAB, Trace, build_shards, die, example_parser

from mixstream import MixLoader, MixStream
from mixstream.controllers import ODM
from mixstream.demo.model import GPTConfig, TinyGPT
from mixstream.integrations.lightning import MixStreamCallback  # mixstream
from mixstream.observe import MixLogger


class LM(pl.LightningModule):
    def __init__(self, stream: MixStream, trace: str | None) -> None:
        super().__init__()
        self.model = TinyGPT(GPTConfig(vocab_size=VOCAB, seq_len=SEQ_LEN, d_model=64, n_layer=2,
                                       n_head=2))
        self.stream, self.trace_path, self.trace = stream, trace, None

    def training_step(self, batch: dict, batch_idx: int) -> dict:
        tokens = batch["input_ids"]  # int64: embeddings take it as it comes
        logits = self.model(tokens)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
        if self.trace_path:  # test instrumentation: records what each step trained on
            self.trace = self.trace or Trace(self.trace_path, rank=self.global_rank)
            self.trace.batch(self.global_step + 1, batch, loss.item(), self.stream.weights)
        return {"loss": loss, "logits": logits}  # logits: the controller's per-sequence losses

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


class KillAt(pl.Callback):
    def __init__(self, step: int | None) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:  # type: ignore[no-untyped-def]
        if trainer.global_step == self.step:
            die()


def main() -> None:
    p = example_parser(__doc__)
    p.add_argument("--devices", type=int, default=1, help="CPU processes (DDP when > 1)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.ckpt")
    a = p.parse_args()
    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)

    stream = MixStream(build_shards(a.data or os.path.join(a.out, "shards")), seed=0)
    loader = MixLoader(stream, batch_size=a.batch_size, num_workers=a.workers)
    ODM(stream, warmup=2, observer=MixLogger(a.mixlog or os.path.join(a.out, "mix.jsonl")))

    ckpt = pl.callbacks.ModelCheckpoint(dirpath=a.out, every_n_train_steps=a.save_every,
                                        save_top_k=-1, save_last=True, filename="{step}")
    trainer = pl.Trainer(max_steps=a.steps, accelerator="cpu", devices=a.devices,
                         strategy="ddp" if a.devices > 1 else "auto",
                         accumulate_grad_batches=a.grad_accum, logger=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[MixStreamCallback(loader), ckpt,  # mixstream
                                    KillAt(a.kill_at)])
    trainer.fit(LM(stream, a.trace), train_dataloaders=loader,
                ckpt_path=os.path.join(a.out, "last.ckpt") if a.resume else None)


if __name__ == "__main__":
    main()
