"""The six diagnostics: data (written once as mixstream shards), target, sweep, right answer.

Each builder returns a :class:`~.problem.Problem`. Scale (``Scale``) sets steps, batch and the
number of rows so the same code runs as a seconds-long smoke test and as the full suite.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mixstream import write_shards

from .chains import Chain, blend, noise, random_chain
from .model import MicroConfig
from .problem import Problem, Schedule

VOCAB = 16
SEQ = 32  # tokens per row (+1 for the shifted target)
CORPUS = Path(__file__).resolve().parents[2] / "mixstream" / "data" / "sample_corpus"


@dataclass(frozen=True)
class Scale:
    steps: int = 300
    batch: int = 32
    rows: int = 8000        # training rows per synthetic domain
    test_rows: int = 256
    dev_rows: int = 64
    text_steps: int = 400
    lr: float = 1e-2


SMOKE = Scale(steps=24, batch=8, rows=400, test_rows=16, dev_rows=8, text_steps=24)


def _write(work: Path, name: str, rows: np.ndarray) -> str:
    out = work / "shards" / name
    write_shards({"input_ids": rows.astype(np.uint16)}, out, domain=name,
                 token_column="input_ids", rows_per_block=256, overwrite=True)
    return str(out)


def _chains_problem(work: Path, sc: Scale, name: str, train: dict[str, tuple[Chain, int]],
                    evals: dict[str, Chain], seed: int) -> tuple[dict, dict, dict, dict]:
    """Shards for ``train`` (chain, rows) and test/dev rows for ``evals``: independent draws."""
    rng = np.random.default_rng(seed)
    dirs, toks = {}, {}
    for d, (ch, n) in train.items():
        rows = ch.sample(n, SEQ + 1, rng)
        dirs[d] = _write(work, d, rows)
        toks[d] = int(rows.size)
    test = {e: torch.from_numpy(ch.sample(sc.test_rows, SEQ + 1, rng)) for e, ch in evals.items()}
    dev = {e: torch.from_numpy(ch.sample(sc.dev_rows, SEQ + 1, rng)) for e, ch in evals.items()}
    return dirs, toks, test, dev


def _even(names: list[str], share: float) -> dict[str, float]:
    return {d: share / len(names) for d in names}


def _mean_w(sel: list[str], first: float = 1.0) -> Callable[[np.ndarray, list[str]], float]:
    def f(w: np.ndarray, domains: list[str]) -> float:
        n = max(1, int(round(len(w) * first)))
        idx = [domains.index(d) for d in sel]
        return float(w[:n, idx].sum(1).mean())
    return f


SYN_MODEL = MicroConfig(vocab=VOCAB, window=3, embed=16, hidden=128)


# ----------------------------------------------------------------------------- noise
def noise_problem(work: Path, sc: Scale) -> Problem:
    rng = np.random.default_rng(101)
    chains = {f"chain{i}": random_chain(1, VOCAB, 0.1, rng) for i in (1, 2, 3)}
    train = {d: (c, sc.rows) for d, c in chains.items()}
    train.update({f"noise{i}": (noise(VOCAB), sc.rows) for i in (1, 2, 3)})
    dirs, toks, test, dev = _chains_problem(work, sc, "noise", train, chains, 1)
    learn, noisy = list(chains), [f"noise{i}" for i in (1, 2, 3)]
    sweep: list[tuple[str, Schedule]] = []
    for s in (0.5, 0.25, 0.1, 0.0):
        sweep.append((f"noise {s:g}", [(0, {**_even(learn, 1 - s), **_even(noisy, s)})]))
    return Problem(
        "noise", "Noise: 3 learnable chains + 3 uniform-noise domains", list(train), dirs, toks,
        test, dev, {d: 1 / 3 for d in learn}, SYN_MODEL, sc.steps, sc.batch, sc.lr, sweep,
        "noise weight (run mean)", _mean_w(noisy), "noise weight -> 0",
        lambda s, o: s <= 0.25,
        predictions={
            "odm": (False, "rewards high loss: noise has the highest loss (paper's design)"),
            "doremi": (True, "noise has zero excess loss over the reference"),
            "ado": (True, "a flat learning curve has no predicted gain"),
            "aioli": (True, "probes on noise do not lower the target loss"),
            "fastmix": (True, "noise gradients do not align with the target's"),
            "acodm": (True, "noise gradients do not interfere constructively"),
            "opmix": (True, "LoRA probes on noise do not lower the target loss"),
            "dml": (True, "the fitted law puts no weight on domains that do not help"),
        })


# ----------------------------------------------------------------------------- scarce
def scarce_problem(work: Path, sc: Scale) -> Problem:
    rng = np.random.default_rng(202)
    related = random_chain(1, VOCAB, 0.1, rng)
    own = random_chain(1, VOCAB, 0.1, rng)
    scarce = blend(own, related, 0.5)   # half its own statistics, half shared with "related"
    other = random_chain(1, VOCAB, 0.1, rng)
    n_scarce = 40 if sc.rows >= 1000 else 8
    train = {"scarce": (scarce, n_scarce), "related": (related, sc.rows), "other": (other, sc.rows)}
    dirs, toks, test, dev = _chains_problem(work, sc, "scarce", train, {"scarce": scarce}, 2)
    sweep: list[tuple[str, Schedule]] = []
    for s in (0.0, 0.05, 0.15, 0.3, 0.5):
        sweep.append((f"scarce {s:g}", [(0, {"scarce": s, "related": 1 - s, "other": 0.0})]))
    return Problem(
        "scarce", f"Scarce but needed: {n_scarce} sequences of the target domain",
        list(train), dirs, toks, test, dev, {"scarce": 1.0}, SYN_MODEL, sc.steps, sc.batch,
        sc.lr, sweep, "scarce weight (run mean)", _mean_w(["scarce"]),
        "an interior scarce share (repetition hurts), found by the sweep",
        lambda s, o: 0.5 * o <= s <= 2 * o if o > 0 else s < 0.02,
        predictions={
            "aioli": (True, "probes measure the target's response to each domain"),
            "fastmix": (True, "target-gradient alignment"),
            "opmix": (True, "fits a law on the target"),
            "dml": (True, "fits a law on the target"),
        })


# ----------------------------------------------------------------------------- target != sources
def target_problem(work: Path, sc: Scale) -> Problem:
    rng = np.random.default_rng(303)
    chains = {d: random_chain(1, VOCAB, 0.1, rng) for d in ("A", "B", "C", "D")}
    train = {d: (c, sc.rows) for d, c in chains.items()}
    # The target is 0.7 x A's test loss + 0.3 x B's (data drawn 70/30 from the two chains): no
    # training domain is the target, and only a target-aware method can know which ones matter.
    dirs, toks, test, dev = _chains_problem(work, sc, "target", train,
                                            {"A": chains["A"], "B": chains["B"]}, 3)
    sweep: list[tuple[str, Schedule]] = [("uniform", [(0, _even(list(chains), 1.0))])]
    for m, a in ((0.9, 0.7), (1.0, 0.5), (1.0, 0.7)):
        sweep.append((f"A+B {m:g}, A:B {a:g}", [(0, {"A": m * a, "B": m * (1 - a),
                                                      **_even(["C", "D"], 1 - m)})]))
    agnostic = "target-agnostic: cannot know the target is a blend of A and B"
    return Problem(
        "target", "Target != sources: target = 0.7 x A + 0.3 x B (test loss), sources A-D",
        list(train), dirs, toks, test, dev, {"A": 0.7, "B": 0.3}, SYN_MODEL, sc.steps, sc.batch,
        sc.lr, sweep, "A+B weight (run mean)", _mean_w(["A", "B"]),
        "most mass on A and B (oracle ~1)",
        lambda s, o: s >= 0.75,
        predictions={
            "odm": (False, agnostic), "doremi": (False, agnostic), "ado": (False, agnostic),
            "acodm": (False, agnostic),
            "aioli": (True, "probes measure the target's response"),
            "fastmix": (True, "target-gradient alignment"),
            "opmix": (True, "fits a law on the target"), "dml": (True, "fits a law on the target"),
        })


# ----------------------------------------------------------------------------- learnability
def learn_problem(work: Path, sc: Scale) -> Problem:
    rng = np.random.default_rng(404)
    easy = {f"easy{i}": random_chain(1, VOCAB, 0.1, rng) for i in (1, 2)}
    hard = random_chain(2, VOCAB, 0.1, rng)
    evals = {**easy, "hard": hard}
    train = {d: (c, sc.rows) for d, c in evals.items()}
    dirs, toks, test, dev = _chains_problem(work, sc, "learn", train, evals, 4)
    third = sc.steps // 3
    half = sc.steps // 2

    def mix(h: float) -> dict[str, float]:
        return {"hard": h, **_even(list(easy), 1 - h)}
    sweep: list[tuple[str, Schedule]] = [(f"hard {h:g}", [(0, mix(h))])
                                          for h in (0.2, 1 / 3, 0.5)]
    sweep.append(("hard 0.7 first third, then 1/3", [(0, mix(0.7)), (third, mix(1 / 3))]))
    sweep.append(("hard 0.2 first half, then 0.5", [(0, mix(0.2)), (half, mix(0.5))]))
    return Problem(
        "learn", "Learnability: one order-2 chain (needs 2 tokens of context) + 2 order-1",
        list(train), dirs, toks, test, dev, {d: 1 / 3 for d in evals}, SYN_MODEL, sc.steps,
        sc.batch, sc.lr, sweep, "hard weight, first third", _mean_w(["hard"], 1 / 3),
        "up-weight the hard domain early (> 1/3), as the sweep's best schedule does",
        lambda s, o: (s > 1 / 3 + 0.03) == (o > 1 / 3 + 0.03),
        predictions={
            "odm": (True, "explores high-loss domains"),
            "ado": (True, "up-weights domains whose fitted curve still falls"),
            "aioli": (True, "probes measure which domain lowers the loss now"),
            "doremi": (True, "excess loss over the reference is largest where learning lags"),
        })


# ----------------------------------------------------------------------------- continual
def continual_problem(work: Path, sc: Scale, seeds: list[int]) -> Problem:
    from .trainer import train

    rng = np.random.default_rng(505)
    chains = {d: random_chain(1, VOCAB, 0.1, rng) for d in ("A", "B")}
    # The new domain needs two tokens of context and the target weighs it as much as the old
    # ones together (continued pre-training: learn C, keep A and B): the right old-data share is
    # below uniform's 2/3. (With an order-1 C and a mean-over-domains target uniform was the
    # sweep's optimum: nothing to find.)
    chains["C"] = random_chain(2, VOCAB, 0.1, rng)
    train_d = {d: (c, sc.rows) for d, c in chains.items()}
    dirs, toks, test, dev = _chains_problem(work, sc, "continual", train_d, chains, 5)
    sweep: list[tuple[str, Schedule]] = []
    for s in (0.25, 0.4, 0.55, 2 / 3):
        sweep.append((f"old {s:.2g}", [(0, {"A": s / 2, "B": s / 2, "C": 1 - s})]))
    p = Problem(
        "continual", "Continual: A and B (order 1) first, then C (order 2) arrives; phase 2 "
        "is compared", list(chains), dirs, toks, test, dev, {"A": 0.25, "B": 0.25, "C": 0.5},
        SYN_MODEL, sc.steps,
        sc.batch, sc.lr, sweep, "old-data share A+B (run mean)", _mean_w(["A", "B"]),
        "the old-data share that balances forgetting A,B against learning C (sweep)",
        lambda s, o: abs(s - o) <= 0.15,
        start_weights={"A": 0.5, "B": 0.5, "C": 0.0},
        predictions={
            "opmix": (True, "the continual recipe picks the old/new share on the target"),
            "dml": (True, "the law's optimum on the target (critical proportion)"),
            "aioli": (True, "probes measure forgetting on the target"),
        })
    phase1 = Problem(**{**p.__dict__, "domains": ["A", "B"],
                        "shard_dirs": {d: dirs[d] for d in ("A", "B")}, "start_weights": None})
    from .methods import DML_SEED

    def phase1_state(s: int) -> dict[str, torch.Tensor]:
        f = work / f"phase1_seed{s}_{sc.steps}x{sc.batch}.pt"   # cached: reports rebuild it
        if f.exists():
            return dict(torch.load(f, weights_only=True))
        st = {k: v.clone() for k, v in train(phase1, s, eval_sets=False).model.state_dict().items()}
        torch.save(st, f)
        return st
    p.init_state = {str(s): phase1_state(s) for s in [*seeds, DML_SEED]}
    return p


# ----------------------------------------------------------------------------- real text
TEXT_SIZES = (1, 2, 4, 8, 16, 32)
TEXT_MODEL = MicroConfig(vocab=256, window=8, embed=16, hidden=128)


def _corpus_bytes(domain: str) -> bytes:
    with gzip.open(CORPUS / f"{domain}.jsonl.gz", "rt", encoding="utf-8") as fh:
        docs = [json.loads(line)["text"] for line in fh if line.strip()]
    return "\n\n".join(docs).encode("utf-8")


def text_problem(work: Path, sc: Scale) -> Problem:
    names = sorted(p.name[: -len(".jsonl.gz")] for p in CORPUS.glob("*.jsonl.gz"))
    width = SEQ + 1
    held = (sc.test_rows + sc.dev_rows) * width
    raw = {d: _corpus_bytes(d) for d in names}
    unit = min((len(raw[d]) - held) // (TEXT_SIZES[-1] * width) for d in names)
    if sc.rows < 1000:
        unit = max(1, unit // 8)
    dirs, toks, test, dev = {}, {}, {}, {}
    for d, k in zip(names, TEXT_SIZES):
        b = np.frombuffer(raw[d], dtype=np.uint8).astype(np.int64)
        # held-out text = the end of the domain (contiguous: no row straddles train and test)
        tail = b[-held:].reshape(-1, width)
        test[d] = torch.from_numpy(tail[: sc.test_rows].copy())
        dev[d] = torch.from_numpy(tail[sc.test_rows:].copy())
        rows = b[: unit * k * width].reshape(-1, width)
        dirs[d] = _write(work, d, rows)
        toks[d] = int(rows.size)
    sizes = np.array([toks[d] for d in names], dtype=np.float64)
    sweep: list[tuple[str, Schedule]] = []
    for tau in (0.0, 0.25, 0.5, 1.0):
        w = sizes ** tau
        sweep.append((f"size^{tau:g}", [(0, dict(zip(names, (w / w.sum()).tolist())))]))
    return Problem(
        "text", "Real text: the packaged corpus, sizes 1:2:4:8:16:32, mean-over-domains target",
        names, dirs, toks, test, dev, {d: 1 / len(names) for d in names}, TEXT_MODEL,
        sc.text_steps, sc.batch, 3e-3 if sc.lr == 1e-2 else sc.lr, sweep,
        "weight on the 2 smallest domains (run mean)", _mean_w(names[:2]),
        "the sweep's best temperature mixture",
        lambda s, o: abs(s - o) <= max(0.05, 0.5 * o),
        predictions={m: (True, "the paper reports lower average loss than the baseline mixture")
                     for m in ("odm", "doremi", "ado", "aioli", "fastmix", "acodm", "opmix",
                               "dml")},
        extra={"sizes": dict(zip(names, TEXT_SIZES)), "unit_rows": unit})


BUILDERS = {"noise": noise_problem, "scarce": scarce_problem, "target": target_problem,
            "learn": learn_problem, "continual": continual_problem, "text": text_problem}
ORDER = list(BUILDERS)


def build(name: str, work: Path, sc: Scale, seeds: list[int]) -> Problem:
    w = work / name
    w.mkdir(parents=True, exist_ok=True)
    if name == "continual":
        return continual_problem(w, sc, seeds)
    return BUILDERS[name](w, sc)  # type: ignore[operator]
