"""Continual training: a run carried into another domain set keeps every old domain's epoch.

Ids are ``domain index (by name) * 1e6 + row`` (tests/exactly_once.py's IdSource), so a sample
keeps its id whatever the stream's domain order; every check is by name.
"""

from __future__ import annotations

import numpy as np
import pytest
from exactly_once import ID_BASE, IdSource

from mixstream import MixLoader, MixStream

SIZES = {"web": [40, 40, 33], "code": [50, 27], "math": [30, 30], "chat": [21]}
NAME_ID = {n: i for i, n in enumerate(SIZES)}


def domains(names, grow=None):
    grow = grow or {}
    return {n: IdSource(NAME_ID[n], SIZES[n] + grow.get(n, [])) for n in names}


def take(loader, steps):
    out = []
    it = iter(loader)
    for _ in range(steps):
        b = next(it)
        names = loader.stream.domains
        out.append((b["index"].numpy().copy(), [names[d] for d in b["domain"].tolist()],
                    b["id"].numpy().copy()))
    return out


def per_domain(rows):
    seq: dict[str, list[int]] = {}
    index = np.concatenate([r[0] for r in rows])
    assert (np.sort(index) == np.arange(len(index))).all()
    order = np.argsort(index)
    names = [n for r in rows for n in r[1]]
    ids = np.concatenate([r[2] for r in rows])
    for k in order:
        seq.setdefault(names[k], []).append(int(ids[k]))
    return seq


def check_epochs(seq, sizes):
    """Each domain: consecutive epochs, each a permutation of the domain (``sizes``: per epoch,
    which version of the domain it is — a grown domain changes size at an epoch boundary)."""
    for name, ids in seq.items():
        assert all(i // ID_BASE == NAME_ID[name] for i in ids)
        pos = 0
        for size in sizes(name):
            chunk = ids[pos : pos + size]
            assert len(set(chunk)) == len(chunk), f"{name}: a sample repeats within an epoch"
            if len(chunk) < size:
                return
            assert sorted(chunk) == sorted(range(NAME_ID[name] * ID_BASE,
                                                 NAME_ID[name] * ID_BASE + size))
            pos += size


def constant(name, extra=None):
    n = sum(SIZES[name]) + sum((extra or {}).get(name, []))
    while True:
        yield n


@pytest.mark.parametrize("workers", [0, 2])
def test_checkpoint_resumes_into_a_superset_and_a_subset(workers):
    s = MixStream(domains(["web", "code"]), seed=1, shuffle_window=32)
    loader = MixLoader(s, batch_size=8, num_workers=workers)
    head = take(loader, 17)
    state = loader.state_dict()
    # superset: math joins; web and code continue their epochs
    s2 = MixStream(domains(["web", "code", "math"]), seed=1, shuffle_window=32,
                   weights={"web": 0.3, "code": 0.3, "math": 0.4})
    loader2 = MixLoader(s2, batch_size=8, num_workers=workers)
    loader2.load_state_dict(state)
    tail = take(loader2, 40)
    seq = per_domain(head + tail)
    check_epochs(seq, lambda n: constant(n))
    assert "math" in seq and all(i >= 17 * 8 for i in np.concatenate(
        [r[0][[k for k, n in enumerate(r[1]) if n == "math"]] for r in tail]))
    # subset: code retired, web continues
    state2 = loader2.state_dict()
    s3 = MixStream(domains(["web", "math"]), seed=1, shuffle_window=32)
    loader3 = MixLoader(s3, batch_size=8, num_workers=workers)
    loader3.load_state_dict(state2)
    more = take(loader3, 30)
    seq = per_domain(head + tail + more)
    check_epochs(seq, lambda n: constant(n))
    assert not any("code" in r[1] for r in more)


def test_a_grown_domain_takes_its_new_shards_at_its_next_epoch():
    s = MixStream(domains(["web", "code"]), seed=2, shuffle_window=20)
    loader = MixLoader(s, batch_size=8, num_workers=1)
    head = take(loader, 23)  # into web's and code's second epochs
    state = loader.state_dict()
    grow = {"code": [15, 15]}
    s2 = MixStream(domains(["web", "code"], grow), seed=2, shuffle_window=20)
    loader2 = MixLoader(s2, batch_size=8, num_workers=1)
    loader2.load_state_dict(state)
    switch = s2._plan.segments[1][-1][0]
    assert switch >= 1
    tail = take(loader2, 50)
    seq = per_domain(head + tail)
    old, new = sum(SIZES["code"]), sum(SIZES["code"]) + 30

    def sizes(name):
        if name != "code":
            yield from constant(name)
        for _ in range(switch):
            yield old
        while True:
            yield new

    check_epochs(seq, sizes)
    assert max(seq["code"]) >= NAME_ID["code"] * ID_BASE + old  # the new shards were read
    # the carried state resumes exactly again
    state2 = loader2.state_dict()
    s3 = MixStream(domains(["web", "code"], grow), seed=2, shuffle_window=20)
    loader3 = MixLoader(s3, batch_size=8, num_workers=1)
    loader3.load_state_dict(state2)
    a = take(loader2, 10)
    b = take(loader3, 10)
    assert all((x[2] == y[2]).all() for x, y in zip(a, b))


def test_a_domain_that_shrank_or_changed_is_refused():
    s = MixStream(domains(["web", "code"]), seed=2)
    loader = MixLoader(s, batch_size=8)
    take(loader, 3)
    state = loader.state_dict()
    shrunk = {"web": IdSource(0, [40, 40]), "code": IdSource(1, SIZES["code"])}
    with pytest.raises(ValueError, match=r"may only grow by shards appended"):
        MixStream(shrunk, seed=2).load_state_dict(state)
    reordered = {"web": IdSource(0, [33, 40, 40]), "code": IdSource(1, SIZES["code"])}
    with pytest.raises(ValueError, match=r"other data|blocks differ"):
        MixStream(reordered, seed=2).load_state_dict(state)


@pytest.mark.parametrize("workers", [0, 2])
def test_add_domains_during_a_run_is_deterministic_and_exact(workers):
    def run():
        s = MixStream(domains(["web", "code"]), seed=3, shuffle_window=24)
        loader = MixLoader(s, batch_size=8, num_workers=workers)
        it = iter(loader)
        rows = []
        at = None
        for step in range(60):
            b = next(it)
            names = s.domains
            rows.append((b["index"].numpy().copy(), [names[d] for d in b["domain"].tolist()],
                         b["id"].numpy().copy()))
            if step == 12:
                at = s.add_domains(domains(["math"]), weights={"web": 1, "code": 1, "math": 2})
            if step == 35:
                s.remove_domains(["code"])
        return rows, at, loader.state_dict()

    rows, at, state = run()
    again, _, _ = run()
    assert all((x[2] == y[2]).all() and x[1] == y[1] for x, y in zip(rows, again))
    assert at == 13
    seq = per_domain(rows)
    check_epochs(seq, lambda n: constant(n))
    first_math = min(i for r in rows for i, n in zip(r[0], r[1]) if n == "math")
    assert first_math >= at * 8
    assert state["domains"][0][0] == "web" and len(state["domains"]) == 2


def _staged(workers, steps, state=None):
    import torch

    from mixstream.controllers import ODM
    from mixstream.stages import Stage, StagePlan

    s = MixStream(domains(["web", "code", "math", "chat"]), seed=4, shuffle_window=24)
    loader = MixLoader(s, batch_size=8, num_workers=workers)
    plan = StagePlan(s, [
        Stage("pretrain", steps=10, weights={"web": 1, "code": 1}),
        Stage("mid", steps=8, weights={"web": 1, "code": 1, "math": 1, "chat": 1},
              controller=lambda st: ODM(st, warmup=2)),
        Stage("sft", weights={"chat": 1, "web": 0.25}),
    ])
    if state is not None:
        loader.load_state_dict(state)
    rows, names = [], s.domains
    it = iter(loader)
    first = s.consumed_batches
    for step in range(first, first + steps):
        b = next(it)
        rows.append((b["index"].numpy().copy(), [names[d] for d in b["domain"].tolist()],
                     b["id"].numpy().copy()))
        g = torch.Generator().manual_seed(step)
        plan.feedback(b["domain"], torch.rand(8, generator=g) + b["domain"].float())
    return rows, loader.state_dict(), s.weight_log, plan


@pytest.mark.parametrize("workers", [0, 2])
def test_a_three_stage_plan_runs_and_resumes_mid_stage_exactly(workers):
    full, _, log_full, plan = _staged(workers, 30)
    assert plan.stage.name == "sft"
    for b, (_, names, _) in enumerate(full):
        if b < 10:
            assert set(names) <= {"web", "code"}
        elif b >= 18:
            assert set(names) <= {"chat", "web"} and "chat" in names
    assert "math" in full[10][1] or "chat" in full[10][1]  # the mid stage starts at batch 10
    assert any("math" in names for _, names, _ in full[10:18])  # ODM mixes all four
    head, state, _, _ = _staged(workers, 13)  # mid-stage (ODM active)
    assert state["attached"]["stages"]["index"] == 1
    tail, _, log_tail, plan2 = _staged(workers, 17, state=state)
    assert plan2.stage.name == "sft"
    for a, b in zip(full, head + tail):
        assert (a[2] == b[2]).all() and a[1] == b[1]
    assert log_tail == log_full[len(log_full) - len(log_tail):]


def test_controllers_gain_and_lose_arms():
    """ODM carries its rewards into a superset (the new arm starts at the kept arms' mean), and
    keeps working after add_domains during the run; a controller that cannot carry its state
    says so."""
    import torch

    from mixstream.controllers import ODM, Aioli

    s = MixStream(domains(["web", "code"]), seed=5)
    loader = MixLoader(s, batch_size=8)
    odm = ODM(s, warmup=1)
    it = iter(loader)
    for _ in range(6):
        b = next(it)
        odm.feedback(b["domain"], b["domain"].float() + 1.0)
    state = loader.state_dict()
    s2 = MixStream(domains(["web", "code", "math"]), seed=5)
    loader2 = MixLoader(s2, batch_size=8)
    odm2 = ODM(s2, warmup=1)
    loader2.load_state_dict(state)
    old = state["attached"]["ODM"]["state"]["reward"]
    assert odm2.reward.tolist()[:2] == old and odm2.reward[2] == pytest.approx(np.mean(old))
    it2 = iter(loader2)
    for _ in range(4):
        b = next(it2)
        odm2.feedback(b["domain"], torch.ones(8))
    s2.add_domains(domains(["chat"]))
    assert odm2.domains == ["web", "code", "math", "chat"] and len(odm2.reward) == 4
    for _ in range(6):
        b = next(it2)
        odm2.feedback(b["domain"], torch.ones(8))
    assert len(odm2.weights) == 4
    s3 = MixStream(domains(["web", "code"]), seed=5)
    loader3 = MixLoader(s3, batch_size=8)
    Aioli(s3)
    state3 = loader3.state_dict()
    s4 = MixStream(domains(["web", "code", "math"]), seed=5)
    loader4 = MixLoader(s4, batch_size=8)
    Aioli(s4)
    with pytest.raises(ValueError, match=r"cannot carry its state"):
        loader4.load_state_dict(state3)


def test_opmix_continual_recipe_adds_a_domain_unknown_at_stream_creation():
    """Issue: OPMix.add_domains only worked for domains declared (at weight 0) up front."""
    import torch
    from test_opmix import _fit_a_only, make, mixed, mse

    from mixstream.controllers.opmix import OPMix
    from mixstream.model import ModelContext

    model = _fit_a_only()
    stream = MixStream({"a": IdSource(0, [40, 40])}, seed=0)
    loader = MixLoader(stream, batch_size=8, num_workers=1)
    op = OPMix(stream, ctx=ModelContext(model, mse, ["a", "b"]), train_batches=mixed,
               val_batches={d: [make(k, 32, 7 + k)] for k, d in enumerate(["a", "b"])},
               lora_steps=40, lora_lr=0.05, rank=2, alpha=2, dropout=0.0, fit_steps=10)
    it = iter(loader)
    for _ in range(5):
        next(it)
    op.add_domains({"b": IdSource(1, [30])}, recipe="continual")
    assert stream.domains == ["a", "b"] and op.domains == ["a", "b"]
    assert op.decisions[-1]["recipe"] == "continual" and 0.2 < stream.weights["b"] < 1.0
    seen = {stream.domains[d] for _ in range(30) for d in next(it)["domain"].tolist()}
    assert seen == {"a", "b"}
    torch.save(loader.state_dict(), "/dev/null")


def test_native_shards_appended_to_a_domain_join_it_and_changed_ones_are_refused(tmp_path):
    from test_errors import native_dir

    web, more, other = (str(native_dir(tmp_path, n, n=k)) for n, k in
                        (("web", 120), ("more", 60), ("other", 60)))
    code = str(native_dir(tmp_path, "code", n=90))
    s = MixStream({"web": [web], "code": code}, seed=1, shuffle_window=32)
    loader = MixLoader(s, batch_size=8)
    it = iter(loader)
    for _ in range(30):
        next(it)
    state = loader.state_dict()
    grown = MixStream({"web": [web, more], "code": code}, seed=1, shuffle_window=32)
    MixLoader(grown, batch_size=8).load_state_dict(state)
    assert len(grown._plan.segments[0]) == 2
    from conftest import domain_table, to_arrow

    from mixstream.shards.writer import write_shards

    changed = tmp_path / "changed"  # web's block sizes, other rows
    write_shards(to_arrow(domain_table(7, 120)), changed, domain="web", rows_per_block=50,
                 blocks_per_shard=2)
    swapped = MixStream({"web": [str(changed), more], "code": code}, seed=1, shuffle_window=32)
    with pytest.raises(ValueError, match=r"may only grow"):
        MixLoader(swapped, batch_size=8).load_state_dict(state)


def test_a_domain_change_names_the_weight_changes_it_supersedes(caplog):
    s = MixStream(domains(["web", "code"]), seed=3, shuffle_window=24)
    loader = MixLoader(s, batch_size=8, num_workers=0)
    it = iter(loader)
    next(it)
    s.set_weights({"web": 1, "code": 3}, from_batch=20)  # scheduled ahead
    with caplog.at_level("WARNING", logger="mixstream.stream"):
        at = s.add_domains(domains(["math"]))
    assert at == 1
    assert "superseded" in caplog.text and "160" in caplog.text  # sample 20 * 8
    assert [f for f, _ in s.weight_log] == [8]  # the new domains' weights from batch 1
