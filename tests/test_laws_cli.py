"""``mixstream laws`` sub-commands: fit, predict, propose, critical; errors exit with code 2."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from mixstream.cli import laws as laws_cli

DATA = Path(__file__).parent / "data" / "laws" / "two_domain_pile.csv"
QUICK = ["--random-t", "1", "--max-step", "5"]


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mixstream")
    laws_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


@pytest.fixture(scope="module")
def law_json(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("laws") / "law.json"
    assert run(["laws", "fit", str(DATA), "--step", "30000", "--model-size", "18915328",
                "--out", str(out), *QUICK]) == 0
    return out


def test_fit_writes_a_law(law_json, capsys):
    data = json.loads(law_json.read_text())
    assert data["kind"] == "data_mixing_law"
    assert data["train_domains"] == ["Github", "Pile-CC"]
    assert len(data["t"]) == 2 and len(data["t"][0]) == 2


def test_predict_prints_losses(law_json, capsys):
    assert run(["laws", "predict", str(law_json), "--mixture", "Github=0.5,Pile-CC=0.5"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1].split("\t")
    # observed 70M/30k losses at 0.5-0.5: Github 1.32782, Pile-CC 3.56695
    assert float(line[1]) == pytest.approx(1.32782, abs=5e-3)
    assert float(line[2]) == pytest.approx(3.56695, abs=5e-3)


def test_propose_respects_caps(law_json, capsys, tmp_path):
    out = tmp_path / "mix.json"
    assert run(["laws", "propose", str(law_json), "--cap", "Github=0.3", "--out", str(out)]) == 0
    mix = json.loads(out.read_text())
    assert mix["Github"] <= 0.3 + 1e-12 and abs(sum(mix.values()) - 1) < 1e-9
    assert run(["laws", "propose", str(law_json), "--method", "grid"]) == 0
    assert "predicted total loss" in capsys.readouterr().out


def test_critical_proportion(law_json, capsys):
    assert run(["laws", "critical", str(law_json), "--val-domain", "Pile-CC", "--original",
                "Pile-CC", "--target-loss", "3.5669533169533167"]) == 0
    p = float(capsys.readouterr().out.split(":")[1])
    assert abs(p - 0.5) < 0.03


@pytest.mark.parametrize("argv,message", [
    (["laws", "fit", str(DATA)], "choose one with --step"),
    (["laws", "fit", str(DATA), "--step", "5"], "no rows with step=5"),
    (["laws", "fit", "missing.csv"], "cannot read"),
    (["laws", "predict", "missing.json", "--mixture", "a=1"], "cannot read the law"),
])
def test_bad_input_exits_2_with_a_message(argv, message, capsys):
    assert run(argv) == 2
    assert message in capsys.readouterr().err


def test_bad_mixture_and_caps(law_json, capsys):
    assert run(["laws", "predict", str(law_json), "--mixture", "Github=0.7"]) == 2
    assert "sum to 1" in capsys.readouterr().err
    assert run(["laws", "predict", str(law_json), "--mixture", "Books=1"]) == 2
    assert "unknown training domain" in capsys.readouterr().err
    assert run(["laws", "propose", str(law_json), "--cap", "Github=0.3,Pile-CC=0.3"]) == 2
    assert "caps sum to 0.6" in capsys.readouterr().err
    assert run(["laws", "propose", str(law_json), "--cap", "Github"]) == 2
    assert "DOMAIN=NUMBER" in capsys.readouterr().err


def test_bad_table_names_line_and_column(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("r_a,r_b,loss_a\n0.5,0.5,1.0\n0.5,0.4,1.0\n")
    assert run(["laws", "fit", str(bad)]) == 2
    assert "line 3: proportions r_a+r_b sum to 0.9" in capsys.readouterr().err
