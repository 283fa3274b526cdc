import json

import pytest
import torch
from controller_fakes import FakeStream

from mixstream.cli.main import main
from mixstream.cli.plot import mixture_series
from mixstream.controllers import ODM, StaticMixture
from mixstream.observe import MixLogger, flatten, read_log, tensorboard_hook


def run_logged(path, steps=40, **kw):
    s = FakeStream(["a", "b", "c"], batch_size=16)
    seen = []
    log = MixLogger(path, hooks=[seen.append], **kw)
    c = ODM(s, warmup=5, observer=log)
    vals = torch.tensor([1.0, 2.0, 3.0])
    for _ in range(steps):
        ids = s.next_batch()
        c.feedback(ids, vals[ids])
    log.close()
    return s, c, seen


def test_jsonl_records(tmp_path):
    s, c, seen = run_logged(tmp_path / "run.jsonl", log_every=10)
    recs = read_log(tmp_path / "run.jsonl")
    assert recs == seen
    kinds = [r["event"] for r in recs]
    assert kinds[0] == "weights" and recs[0]["kind"] == "initial"
    weights = [r for r in recs if r["event"] == "weights" and r["kind"] == "sampling"]
    assert len(weights) == 35 and weights[-1]["weights"] == pytest.approx(c.weights)
    steps = [r for r in recs if r["event"] == "step"]
    assert [r["step"] for r in steps] == [10, 20, 30, 40]
    assert sum(sum(r["counts"].values()) for r in steps) == 40 * 16
    assert steps[-1]["loss"]["c"] == pytest.approx(3.0)
    assert steps[-1]["loss_ema"]["a"] == pytest.approx(1.0)


def test_hooks_and_flatten():
    rec = {"event": "weights", "step": 3, "from_sample": 48, "weights": {"a": 0.5, "b": 0.5}}
    assert flatten(rec) == {"weights/from_sample": 48.0, "weights/weights/a": 0.5,
                            "weights/weights/b": 0.5}

    class W:
        def __init__(self):
            self.calls = []

        def add_scalar(self, tag, v, step):
            self.calls.append((tag, v, step))
    w = W()
    tensorboard_hook(w)(rec)
    assert ("weights/weights/a", 0.5, 3) in w.calls


def test_read_log_names_bad_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps({"event": "step"}) + "\n{not json\n")
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        read_log(p)


def test_ema_survives_checkpoint():
    s = FakeStream(["a", "b"])
    log = MixLogger()
    c = StaticMixture(s, observer=log)
    c.feedback(torch.tensor([0, 1]), torch.tensor([2.0, 4.0]))
    log2 = MixLogger()
    c2 = StaticMixture(FakeStream(["a", "b"]), observer=log2)
    c2.load_state_dict(c.state_dict())
    assert log2.loss_ema == {"a": 2.0, "b": 4.0}


def test_state_loads_with_weights_only():
    """Issue 10 item 6: the logger's state held np.float64, refused by weights_only=True."""
    from controller_harness import torch_round_trip
    s, c, _ = run_logged(None, steps=12)
    back = torch_round_trip(c.state_dict())  # raises on numpy scalars
    log2 = MixLogger()
    log2.load_state_dict(back["observer"])
    assert log2.loss_ema == c.observer.loss_ema


def test_plot_cli(tmp_path):
    run_logged(tmp_path / "odm.jsonl")
    run_logged(tmp_path / "odm2.jsonl", steps=20)
    out = tmp_path / "mix.png"
    assert main(["plot", str(tmp_path / "odm.jsonl"), str(tmp_path / "odm2.jsonl"), "-o",
                 str(out), "--realised"]) == 0
    assert out.stat().st_size > 10_000 and out.read_bytes()[:4] == b"\x89PNG"
    domains, xs, ws = mixture_series(read_log(tmp_path / "odm.jsonl"))
    assert domains == ["a", "b", "c"] and xs[0] == 0 and xs[-1] == 40
    assert ws[0].tolist() == pytest.approx([1 / 3] * 3)


def test_plot_cli_errors(tmp_path):
    with pytest.raises(SystemExit, match="no such log"):
        main(["plot", str(tmp_path / "missing.jsonl")])
    p = tmp_path / "empty.jsonl"
    p.write_text(json.dumps({"event": "step", "step": 1}) + "\n")
    with pytest.raises(SystemExit, match="no 'weights' records"):
        main(["plot", str(p), "-o", str(tmp_path / "x.png")])
