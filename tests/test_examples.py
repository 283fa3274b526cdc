"""The examples resume bit-exactly after kill -9, as a user would run them.

Each case runs an example twice in fresh processes:

A. train 8 steps with a checkpoint at step 4, then SIGKILL (no cleanup, no final save);
B. ``--resume`` from the last checkpoint A left, train to step 8.

B's steps 5-8 must equal A's (uninterrupted through step 8): tokens (hash), domain ids, sample
indices and loss of every micro-batch, the stream's weights at every batch, and the controller's
weight log (ODM with a 2-step warm-up, so the mixture moves). Distributed cases (torchrun with 2
gloo processes; Lightning DDP with 2 CPU processes) also check that ranks trained on disjoint
samples and saw identical weights.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from dist_helpers import free_port

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
STEPS, SAVE = 8, 4


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("example_shards")
    sys.path.insert(0, str(EXAMPLES))
    try:
        import common
    finally:
        sys.path.remove(str(EXAMPLES))
    common.build_shards(root)
    return str(root)


def launch(script: str, out: Path, data: str, extra: list[str], *, procs: int, mode: str,
           tag: str) -> subprocess.CompletedProcess:
    args = ["--out", str(out), "--data", data, "--steps", str(STEPS), "--save-every", str(SAVE),
            "--trace", str(out / f"trace-{tag}.jsonl"), "--mixlog", str(out / f"mix-{tag}.jsonl"),
            *extra]
    if mode == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(procs),
               "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
               str(EXAMPLES / script), *args]
    else:
        cmd = [sys.executable, str(EXAMPLES / script), *args]
        if mode == "devices":
            cmd += ["--devices", str(procs)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if mode == "devices":
        env["MASTER_PORT"] = str(free_port())
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"{script} {tag} timed out:\n{output[-4000:]}")
    finally:
        try:  # no process of the job outlives the test (Lightning's DDP children, torchrun's)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(cmd, proc.returncode, output, None)


def records(out: Path, tag: str, rank: int) -> dict[int, list[dict]]:
    by_step: dict[int, list[dict]] = {}
    path = out / f"trace-{tag}.rank{rank}.jsonl"
    for line in path.read_text().splitlines():
        r = json.loads(line)
        by_step.setdefault(r["step"], []).append(r)
    return by_step


def weight_events(path: Path) -> list[dict]:
    events = [json.loads(x) for x in path.read_text().splitlines()]
    return [e for e in events if e["event"] == "weights" and e["kind"] != "initial"]


def check_ranks(per_rank: list[dict[int, list[dict]]]) -> None:
    """Every step: ranks trained on disjoint samples and saw identical weights."""
    for step in per_rank[0]:
        seen = [i for ra in per_rank for r in ra[step] for i in r["index"]]
        assert len(seen) == len(set(seen)), f"step {step}: ranks trained on the same samples"
        assert len({json.dumps(ra[step][0]["weights"]) for ra in per_rank}) == 1


def kill_and_resume(script: str, tmp_path: Path, data: str, *, procs: int = 1,
                    mode: str = "python", extra: list[str] | None = None) -> None:
    extra = extra or []
    out = tmp_path / "run"
    a = launch(script, out, data, [*extra, "--kill-at", str(STEPS)], procs=procs, mode=mode,
               tag="A")
    if mode == "torchrun":
        assert a.returncode != 0, a.stdout[-4000:]
        assert "SIGKILL" in a.stdout, a.stdout[-4000:]
    else:
        assert a.returncode == -signal.SIGKILL, a.stdout[-4000:]
    runs_a = [records(out, "A", rank) for rank in range(procs)]
    for rank, ra in enumerate(runs_a):
        assert sorted(ra) == list(range(1, STEPS + 1)), f"rank {rank}: A trained {sorted(ra)}"
    if procs > 1:
        check_ranks(runs_a)

    b = launch(script, out, data, [*extra, "--resume"], procs=procs, mode=mode, tag="B")
    assert b.returncode == 0, b.stdout[-6000:]
    runs_b = [records(out, "B", rank) for rank in range(procs)]
    for rank, (ra, rb) in enumerate(zip(runs_a, runs_b)):
        assert sorted(rb) == list(range(SAVE + 1, STEPS + 1)), f"rank {rank}: B {sorted(rb)}"
        for step in rb:
            for x, y in zip(ra[step], rb[step], strict=True):
                for key in ("tokens", "shape", "domain", "index", "loss", "weights"):
                    assert x[key] == y[key], f"rank {rank} step {step}: {key} differs"
    wa, wb = weight_events(out / "mix-A.jsonl"), weight_events(out / "mix-B.jsonl")
    assert wb, "the controller never changed the weights: the test would prove nothing"
    assert wb == [e for e in wa if e["step"] > SAVE]


pytestmark = pytest.mark.slow


def test_hf_trainer_resumes_exactly(tmp_path: Path, data: str) -> None:
    pytest.importorskip("transformers")
    kill_and_resume("train_hf.py", tmp_path, data, extra=["--grad-accum", "2"])


def test_hf_trainer_torchrun_two_ranks(tmp_path: Path, data: str) -> None:
    pytest.importorskip("transformers")
    kill_and_resume("train_hf.py", tmp_path, data, procs=2, mode="torchrun",
                    extra=["--workers", "1"])


def test_lightning_resumes_exactly(tmp_path: Path, data: str) -> None:
    pytest.importorskip("lightning")
    kill_and_resume("train_lightning.py", tmp_path, data, extra=["--workers", "2"])


def test_lightning_ddp_two_processes(tmp_path: Path, data: str) -> None:
    pytest.importorskip("lightning")
    # the MixLoader is created before Lightning starts torch.distributed: the stream re-reads
    # its rank when the checkpoint is loaded and when iteration starts
    kill_and_resume("train_lightning.py", tmp_path, data, procs=2, mode="devices")


def test_plain_loop_resumes_exactly(tmp_path: Path, data: str) -> None:
    kill_and_resume("train_loop.py", tmp_path, data, extra=["--workers", "1"])


def test_plain_loop_torchrun_two_ranks(tmp_path: Path, data: str) -> None:
    kill_and_resume("train_loop.py", tmp_path, data, procs=2, mode="torchrun")
