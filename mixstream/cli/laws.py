"""``mixstream laws``: fit Data Mixing Laws on a (mixture, loss) table and propose a mixture.

Sub-commands::

    mixstream laws fit TABLE.csv [--step S | --target-step S] [--model-size N | --target-size N]
                       [--out LAW.json]
    mixstream laws predict LAW.json --mixture web=0.5,code=0.5 [--weight web=2,...]
    mixstream laws propose LAW.json|TABLE.csv [--cap code=0.2,...] [--weight ...] [--method grid]
                           [--no-trust-region] [--law implicit]
    mixstream laws critical TABLE.csv|LAW.json --val-domain web --original web --target-loss 3.1
    mixstream laws compare TABLE.csv [--folds 5] [--weight ...]

``critical`` on a two-domain TABLE uses the paper's two-domain estimator
(:func:`~mixstream.laws.fit_two_domain`, ``c`` chosen by correlation as in the authors'
notebook), which reproduces the published critical proportions; on a LAW.json it uses the
explicit law (``c`` free). ``compare`` prints the held-out error of the explicit and the
implicit (MLP) law next to that of predicting the mean. Warnings (too few mixtures, a
leave-one-out error no better than the mean, extrapolation) go to stderr. Mixtures must sum
to 1 within 1e-3 everywhere (:func:`~mixstream.laws.check_mixtures`). The table format is
documented in :mod:`mixstream.laws.table`. Exit code 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Sequence

import numpy as np

from mixstream.laws import (
    DataMixingLaw,
    LawWarning,
    TableError,
    check_mixtures,
    fit_two_domain,
    prepare_table,
    read_table,
)
from mixstream.laws.implicit import ImplicitMixingLaw, compare_laws
from mixstream.laws.mixture import LOG_C_GRID, LOG_K_GRID
from mixstream.laws.scaling import SIZE_LAW, STEP_LAW, TOKENS_PER_STEP
from mixstream.laws.table import parse_size

from .text import FORMATTER, plain


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
    return check_mixtures(np.array([given.get(d, 0.0) for d in domains]), f"--mixture {text!r}")


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


def _progress(msg: str, _t0: list[float] = []) -> None:  # noqa: B006 - start time, once
    if not _t0:
        _t0.append(time.monotonic())
    print(f"[{time.monotonic() - _t0[0]:6.1f}s] {msg}", file=sys.stderr, flush=True)


def _step_range(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    lo, sep, hi = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(lo), int(hi)
    except ValueError:
        raise ValueError(f"bad --step-range {text!r}; write LO:HI, e.g. 2000:30000") from None


def _prepared(args: argparse.Namespace, path: str):
    table = read_table(path)
    step_settings = STEP_LAW if args.draws is None else STEP_LAW.with_draws(args.draws)
    size_settings = SIZE_LAW if args.draws is None else SIZE_LAW.with_draws(args.draws)
    prepared = prepare_table(
        table, step=args.step,
        size=None if args.model_size is None else parse_size(args.model_size),
        target_step=args.target_step,
        target_size=None if args.target_size is None else parse_size(args.target_size),
        step_settings=step_settings, size_settings=size_settings,
        tokens_per_step=args.tokens_per_step, seed=args.seed,
        step_range=_step_range(args.step_range), size_restarts=args.size_restarts,
        progress=None if args.quiet else _progress)
    if prepared.spread is not None:
        print(f"size-law extrapolation: spread over {args.size_restarts} restarts max "
              f"{prepared.spread.max():.4g}, mean {prepared.spread.mean():.4g} (loss units)",
              file=sys.stderr)
    return prepared


def _fit(args: argparse.Namespace, path: str) -> DataMixingLaw:
    prepared = _prepared(args, path)
    law = DataMixingLaw(delta=args.delta, max_step=args.max_step, n_random_t=args.random_t,
                        log_c_grid=LOG_C_GRID, log_k_grid=LOG_K_GRID, seed=args.seed,
                        progress=None if args.quiet else _progress)
    law.fit(prepared.mixtures, prepared.losses, train_domains=prepared.train_domains,
            val_domains=prepared.val_domains, allow_underdetermined=args.allow_underdetermined)
    return law


def _print_law(law: DataMixingLaw, out=sys.stdout) -> None:
    p = law.params.gauge_fixed() if law.params is not None else None
    assert p is not None
    last = law.train_domains[-1]
    print(f"L_i(r) = c_i + k_i * exp(sum_j t_ij r_j)   (gauge: t_i,{last} = 0)", file=out)
    header = ["val_domain", "c", "k"] + [f"t_{d}" for d in law.train_domains] + [
        "fit_loss", "loo_rmse", "mean_loo_rmse"]
    print("\t".join(header), file=out)
    for i, name in enumerate(law.val_domains):
        row = [name, f"{np.exp(p.log_c[i]):.6g}", f"{np.exp(p.log_k[i]):.6g}"]
        row += [f"{v:.6g}" for v in p.t[i]] + [f"{law.selection_loss[i]:.3g}"]
        row += ["-", "-"] if law.loo_rmse is None or law.loo_baseline is None else [
            f"{law.loo_rmse[i]:.4g}", f"{law.loo_baseline[i]:.4g}"]
        print("\t".join(row), file=out)
    print("(loo_rmse: leave-one-out error of the law; mean_loo_rmse: of predicting the mean "
          "loss — the law is useful only where the first is clearly smaller)", file=out)


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
    weights = _pairs(args.weight, "weight") or None
    caps = _pairs(args.cap, "cap") or None
    if args.law == "implicit":
        if args.source.endswith(".json"):
            raise ValueError("--law implicit fits on a table: give TABLE.csv, not a law JSON")
        t = _prepared(args, args.source)
        from mixstream.laws.mixture import _as_weights
        w = _as_weights(weights, t.val_domains)
        imp = ImplicitMixingLaw(seed=args.seed).fit(t.mixtures, t.losses @ w)
        unknown = [d for d in (caps or {}) if d not in t.train_domains]
        if unknown:
            raise ValueError(f"cap for unknown training domain(s) {unknown}")
        cap = None if caps is None else [caps.get(d, 1.0) for d in t.train_domains]
        r = imp.propose(cap, grid=args.grid, trust_region=not args.no_trust_region)
        names, total = t.train_domains, float(imp.predict(r))
    else:
        law = (_load_law(args.source) if args.source.endswith(".json")
               else _fit(args, args.source))
        r = law.propose(weights, caps=caps, method=args.method, grid=args.grid,
                        trust_region=not args.no_trust_region)
        names, total = law.train_domains, float(law.predict_total(r, weights)[0])
    print("\t".join(names))
    print("\t".join(f"{v:.6g}" for v in r))
    print(f"predicted total loss {total:.6g}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(dict(zip(names, r.tolist())), f, indent=2)
        print(f"wrote {args.out}")
    return 0


def cmd_critical(args: argparse.Namespace) -> int:
    if not args.law.endswith(".json"):
        return _critical_two_domain(args)
    law = _load_law(args.law)
    q = None
    if args.new:
        q = dict(zip(law.train_domains, _mixture(args.new, law.train_domains).tolist()))
    p = law.critical_proportion(args.val_domain, args.original, args.target_loss, q)
    print(f"critical proportion of {args.original}: {p:.6g}")
    print("note: explicit law, c fitted freely; for the paper's two-domain estimator pass the "
          "table instead", file=sys.stderr)
    if not 0 <= p <= 1:
        print("(outside [0, 1]: no mixture on this line reaches the target exactly)")
    return 0


def _critical_two_domain(args: argparse.Namespace) -> int:
    """The paper's estimator: the two-domain law fitted as in ``mix_2_domains.ipynb``."""
    t = _prepared(args, args.law)
    if len(t.train_domains) != 2:
        raise ValueError(f"{args.law}: the two-domain estimator needs exactly 2 training "
                         f"domains, the table has {list(t.train_domains)}; fit a law "
                         f"('laws fit --out LAW.json') and pass the JSON instead")
    if args.new:
        raise ValueError("--new applies to a law JSON; with two domains the new data is the "
                         "other domain")
    for name, seq in ((args.val_domain, t.val_domains), (args.original, t.train_domains)):
        if name not in seq:
            raise ValueError(f"unknown domain {name!r}; known: {list(seq)}")
    r = t.mixtures[:, t.train_domains.index(args.original)]
    law = fit_two_domain(r, t.losses[:, t.val_domains.index(args.val_domain)])
    p = law.critical_proportion(args.target_loss)
    print(f"two-domain law L(r) = {law.c:.6g} + exp({law.k:.6g} r + {law.b:.6g})  "
          f"(r = share of {args.original})")
    print(f"critical proportion of {args.original}: {p:.6g}")
    if not 0 <= p <= 1:
        print("(outside [0, 1]: no mixture on this line reaches the target exactly)")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    t = _prepared(args, args.table)
    weights = _pairs(args.weight, "weight") or None
    law = DataMixingLaw(delta=args.delta, max_step=args.max_step, n_random_t=args.random_t,
                        seed=args.seed)
    res = compare_laws(t.mixtures, t.losses, weights, folds=args.folds, explicit=law,
                       implicit=ImplicitMixingLaw(seed=args.seed), seed=args.seed)
    print(f"held-out RMSE of the weighted total loss ({int(res['folds'])}-fold, "
          f"{len(t)} mixtures):")
    for name in ("explicit", "implicit", "mean"):
        print(f"  {name:9s} {res[name]:.5g}")
    return 0


def _guard(func):
    def run(args: argparse.Namespace) -> int:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", LawWarning)
                try:
                    return func(args)
                finally:
                    for w in caught:
                        if issubclass(w.category, LawWarning):
                            print(f"mixstream laws: WARNING: {w.message}", file=sys.stderr)
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
    g.add_argument("--step-range", help="fit the step law on checkpoints LO:HI only")
    g.add_argument("--size-restarts", type=int, default=3,
                   help="size-law fits with different seeds; the spread is reported "
                        "(default %(default)s)")
    g.add_argument("--allow-underdetermined", action="store_true",
                   help="fit even with fewer mixtures than the law's parameters (warns)")
    g.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    g.add_argument("--seed", type=int, default=0)


def add_parser(subparsers) -> None:
    """Register ``mixstream laws`` and its sub-commands."""
    laws = subparsers.add_parser("laws", help="fit Data Mixing Laws and propose a mixture",
                                 description=plain(__doc__), formatter_class=FORMATTER)
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
    p.add_argument("--no-trust-region", action="store_true",
                   help="search the whole simplex (default: no share above the largest fitted)")
    p.add_argument("--law", choices=("explicit", "implicit"), default="explicit",
                   help="explicit exponential law, or the authors' implicit MLP law (table input)")
    p.add_argument("--out", help="write the mixture as JSON")
    _fit_options(p)
    p.set_defaults(func=_guard(cmd_propose))

    p = sub.add_parser("critical", help="critical proportion of the original domain "
                                        "(continual pre-training)")
    p.add_argument("law", help="two-domain TABLE.csv (the paper's estimator) or a law JSON")
    p.add_argument("--val-domain", required=True, help="validation domain whose loss is kept")
    p.add_argument("--original", required=True, help="the original training domain")
    p.add_argument("--target-loss", type=float, required=True, help="loss to keep (before training)")
    p.add_argument("--new", help="mixture of the new data, e.g. code=1 (default: uniform)")
    _fit_options(p)
    p.set_defaults(func=_guard(cmd_critical))

    p = sub.add_parser("compare", help="held-out error of the explicit and the implicit law")
    p.add_argument("table", help="CSV table")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    p.add_argument("--weight", action="append", help="validation weights for the total")
    _fit_options(p)
    p.set_defaults(func=_guard(cmd_compare))
