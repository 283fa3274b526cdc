"""``mixstream laws``: fit Data Mixing Laws on a (mixture, loss) table and propose a mixture.

Sub-commands::

    mixstream laws fit TABLE.csv [--step S | --target-step S] [--model-size N | --target-size N]
                       [--out LAW.json]
    mixstream laws predict LAW.json --mixture web=0.5,code=0.5 [--weight web=2,...]
    mixstream laws propose LAW.json|TABLE.csv [--cap code=0.2,...] [--weight ...] [--method grid]
    mixstream laws critical LAW.json --val-domain web --original web --target-loss 3.1

The table format is documented in :mod:`mixstream.laws.table`. Exit code 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import numpy as np

from mixstream.laws import (
    DataMixingLaw,
    TableError,
    critical_proportion,
    prepare_table,
    read_table,
)
from mixstream.laws.mixture import LOG_C_GRID, LOG_K_GRID
from mixstream.laws.scaling import SIZE_LAW, STEP_LAW, TOKENS_PER_STEP
from mixstream.laws.table import parse_size


def _pairs(values: Sequence[str] | None, what: str) -> dict[str, float]:
    """``["a=0.5,b=0.5", "c=1"]`` -> ``{"a": 0.5, "b": 0.5, "c": 1.0}``."""
    out: dict[str, float] = {}
    for chunk in values or []:
        for item in chunk.split(","):
            if not item.strip():
                continue
            name, sep, val = item.partition("=")
            try:
                if not sep or not name.strip():
                    raise ValueError
                out[name.strip()] = float(val)
            except ValueError:
                raise ValueError(f"bad {what} {item!r}; write DOMAIN=NUMBER, e.g. web=0.5") from None
    return out


def _mixture(text: str, domains: Sequence[str]) -> np.ndarray:
    given = _pairs([text], "mixture entry")
    unknown = [d for d in given if d not in domains]
    if unknown:
        raise ValueError(f"unknown training domain(s) {unknown} in --mixture; known: {list(domains)}")
    r = np.array([given.get(d, 0.0) for d in domains])
    if np.any(r < 0) or abs(r.sum() - 1) > 1e-3:
        raise ValueError(f"--mixture {text!r} must be >= 0 and sum to 1 (sums to {r.sum():.6g})")
    return r / r.sum()


def _load_law(path: str) -> DataMixingLaw:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise ValueError(f"{path}: cannot read the law ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON ({e}); write it with 'mixstream laws fit --out'") from None
    try:
        return DataMixingLaw.from_dict(data)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def _fit(args: argparse.Namespace, path: str) -> DataMixingLaw:
    table = read_table(path)
    step_settings = STEP_LAW if args.draws is None else STEP_LAW.with_draws(args.draws)
    size_settings = SIZE_LAW if args.draws is None else SIZE_LAW.with_draws(args.draws)
    prepared = prepare_table(
        table, step=args.step,
        size=None if args.model_size is None else parse_size(args.model_size),
        target_step=args.target_step,
        target_size=None if args.target_size is None else parse_size(args.target_size),
        step_settings=step_settings, size_settings=size_settings,
        tokens_per_step=args.tokens_per_step, seed=args.seed)
    law = DataMixingLaw(delta=args.delta, max_step=args.max_step, n_random_t=args.random_t,
                        log_c_grid=LOG_C_GRID, log_k_grid=LOG_K_GRID, seed=args.seed)
    law.fit(prepared.mixtures, prepared.losses, train_domains=prepared.train_domains,
            val_domains=prepared.val_domains)
    return law


def _print_law(law: DataMixingLaw, out=sys.stdout) -> None:
    p = law.params.gauge_fixed() if law.params is not None else None
    assert p is not None
    last = law.train_domains[-1]
    print(f"L_i(r) = c_i + k_i * exp(sum_j t_ij r_j)   (gauge: t_i,{last} = 0)", file=out)
    header = ["val_domain", "c", "k"] + [f"t_{d}" for d in law.train_domains] + ["fit_loss"]
    print("\t".join(header), file=out)
    for i, name in enumerate(law.val_domains):
        row = [name, f"{np.exp(p.log_c[i]):.6g}", f"{np.exp(p.log_k[i]):.6g}"]
        row += [f"{v:.6g}" for v in p.t[i]] + [f"{law.selection_loss[i]:.3g}"]
        print("\t".join(row), file=out)


def cmd_fit(args: argparse.Namespace) -> int:
    law = _fit(args, args.table)
    _print_law(law)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(law.to_dict(), f, indent=2)
        print(f"wrote {args.out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    law = _load_law(args.law)
    weights = _pairs(args.weight, "weight") or None
    print("\t".join(["mixture"] + list(law.val_domains) + ["total"]))
    for text in args.mixture:
        r = _mixture(text, law.train_domains)
        losses = law.predict(r)
        total = law.predict_total(r, weights)[0]
        print("\t".join([text] + [f"{v:.6g}" for v in losses] + [f"{total:.6g}"]))
    return 0


def cmd_propose(args: argparse.Namespace) -> int:
    law = _load_law(args.source) if args.source.endswith(".json") else _fit(args, args.source)
    weights = _pairs(args.weight, "weight") or None
    caps = _pairs(args.cap, "cap") or None
    r = law.propose(weights, caps=caps, method=args.method, grid=args.grid)
    print("\t".join(law.train_domains))
    print("\t".join(f"{v:.6g}" for v in r))
    print(f"predicted total loss {law.predict_total(r, weights)[0]:.6g}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(dict(zip(law.train_domains, r.tolist())), f, indent=2)
        print(f"wrote {args.out}")
    return 0


def cmd_critical(args: argparse.Namespace) -> int:
    law = _load_law(args.law)
    assert law.params is not None
    for name, seq in ((args.val_domain, law.val_domains), (args.original, law.train_domains)):
        if name not in seq:
            raise ValueError(f"unknown domain {name!r}; known: {list(seq)}")
    q = None
    if args.new:
        q = _mixture(args.new, law.train_domains)
    p = critical_proportion(law.params, law.val_domains.index(args.val_domain),
                            law.train_domains.index(args.original), args.target_loss, q)
    print(f"critical proportion of {args.original}: {p:.6g}")
    if not 0 <= p <= 1:
        print("(outside [0, 1]: no mixture on this line reaches the target exactly)")
    return 0


def _guard(func):
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (ValueError, TableError) as e:
            print(f"mixstream laws: error: {e}", file=sys.stderr)
            return 2
    return run


def _fit_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("fitting (table input)")
    g.add_argument("--step", type=int, help="use the rows of this training step")
    g.add_argument("--model-size", help="use the rows of this model size (e.g. 70M)")
    g.add_argument("--target-step", type=int, help="extrapolate each run to this step (step law)")
    g.add_argument("--target-size", help="extrapolate across sizes to this size (size law)")
    g.add_argument("--tokens-per-step", type=int, default=TOKENS_PER_STEP,
                   help="tokens per training step for the step law (default %(default)s)")
    g.add_argument("--delta", type=float, default=0.05, help="Huber delta (default %(default)s)")
    g.add_argument("--max-step", type=int, default=50, help="outer L-BFGS steps (default %(default)s)")
    g.add_argument("--random-t", type=int, default=30,
                   help="random t draws per (log c, log k) start (default %(default)s: 6000 starts)")
    g.add_argument("--draws", type=int, default=None,
                   help="random draws per start of the step/size laws (default 50, the authors')")
    g.add_argument("--seed", type=int, default=0)


def add_parser(subparsers) -> None:
    """Register ``mixstream laws`` and its sub-commands."""
    laws = subparsers.add_parser("laws", help="fit Data Mixing Laws and propose a mixture",
                                 description=__doc__.split("\n\n")[0])
    sub = laws.add_subparsers(dest="laws_command", metavar="SUBCOMMAND")
    laws.set_defaults(func=lambda args: (laws.print_help(), 2)[1])

    p = sub.add_parser("fit", help="fit the per-domain law on a CSV table")
    p.add_argument("table", help="CSV table (r_<domain>, loss_<domain>, [step], [model_size])")
    p.add_argument("--out", help="write the fitted law as JSON")
    _fit_options(p)
    p.set_defaults(func=_guard(cmd_fit))

    p = sub.add_parser("predict", help="predict per-domain losses of mixtures")
    p.add_argument("law", help="law JSON written by 'fit --out'")
    p.add_argument("--mixture", action="append", required=True, help="e.g. web=0.6,code=0.4")
    p.add_argument("--weight", action="append", help="validation weights for the total")
    p.set_defaults(func=_guard(cmd_predict))

    p = sub.add_parser("propose", help="the mixture with the lowest predicted loss")
    p.add_argument("source", help="law JSON, or a CSV table to fit first")
    p.add_argument("--cap", action="append", help="availability caps, e.g. code=0.2,books=0.1")
    p.add_argument("--weight", action="append", help="validation weights, e.g. web=1,code=2")
    p.add_argument("--method", choices=("convex", "grid"), default="convex")
    p.add_argument("--grid", type=float, default=1 / 16, help="halving-grid step (method grid)")
    p.add_argument("--out", help="write the mixture as JSON")
    _fit_options(p)
    p.set_defaults(func=_guard(cmd_propose))

    p = sub.add_parser("critical", help="critical proportion of the original domain "
                                        "(continual pre-training)")
    p.add_argument("law", help="law JSON written by 'fit --out'")
    p.add_argument("--val-domain", required=True, help="validation domain whose loss is kept")
    p.add_argument("--original", required=True, help="the original training domain")
    p.add_argument("--target-loss", type=float, required=True, help="loss to keep (before training)")
    p.add_argument("--new", help="mixture of the new data, e.g. code=1 (default: uniform)")
    p.set_defaults(func=_guard(cmd_critical))
