"""Hugging Face Trainer on a MixLoader: a tiny GPT-2 (built from a config, nothing downloaded)
on three domains of real text, ODM retuning the mixture, checkpoints that resume exactly.

    python examples/train_hf.py --out runs/hf --steps 40 --save-every 10
    python examples/train_hf.py --out runs/hf --steps 60 --resume          # continues exactly
    torchrun --nproc-per-node 2 examples/train_hf.py --out runs/hf2 --steps 40   # 2 CPU ranks

The mixstream lines are marked ``# mixstream``; the rest is an ordinary Trainer script.
``--trace``/``--kill-at`` exist for the resume tests (tests/test_examples.py).
"""

from __future__ import annotations

import os

import torch
from common import EOT, SEQ_LEN, VOCAB, Trace, build_shards, die, example_parser
from transformers import GPT2Config, GPT2LMHeadModel, TrainerCallback, TrainingArguments, set_seed

from mixstream import MixLoader, MixStream
from mixstream.controllers import ODM
from mixstream.integrations.hf import MixTrainer  # mixstream
from mixstream.observe import MixLogger

DROP = float(os.environ.get("DROP", 0.1))  # dropout (the resume test checks masks too)


def main() -> None:
    p = example_parser(__doc__)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    a = p.parse_args()
    torch.set_num_threads(1)

    args = TrainingArguments(output_dir=a.out, max_steps=a.steps, save_steps=a.save_every,
                             gradient_accumulation_steps=a.grad_accum, learning_rate=1e-3,
                             warmup_steps=2, logging_steps=5, use_cpu=True, report_to="none",
                             seed=0)
    stream = MixStream(build_shards(a.data or os.path.join(a.out, "shards")), seed=0)
    loader = MixLoader(stream, batch_size=a.batch_size, num_workers=a.workers)
    ODM(stream, warmup=2, observer=MixLogger(a.mixlog or os.path.join(a.out, "mix.jsonl")))

    set_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=SEQ_LEN, n_embd=64,
                                       n_layer=2, n_head=2, bos_token_id=EOT,
                                       eos_token_id=EOT, resid_pdrop=DROP, embd_pdrop=DROP, attn_pdrop=DROP))
    trace = Trace(a.trace, rank=args.process_index)

    class TracedTrainer(MixTrainer):  # test instrumentation: records what each step trained on
        def training_step(self, model, inputs, num_items_in_batch=None):  # type: ignore[no-untyped-def]
            weights = stream.weights
            loss = super().training_step(model, inputs, num_items_in_batch)
            trace.batch(self.state.global_step + 1, inputs, loss.item(), weights)
            return loss

    class KillAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            if state.global_step == a.kill_at:
                die()

    trainer = TracedTrainer(model=model, args=args, train_loader=loader,  # mixstream
                            callbacks=[KillAt()])
    trainer.train(resume_from_checkpoint=True if a.resume else None)
    if torch.distributed.is_initialized():  # a clean gloo teardown under torchrun
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
