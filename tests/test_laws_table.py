"""The mixing-law CSV table: parsing, selection, and errors that name the line and column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mixstream.laws import TableError, format_table, parse_table, read_table
from mixstream.laws.table import parse_size

DATA = Path(__file__).parent / "data" / "laws" / "two_domain_pile.csv"
GOOD = """# comment
run,model_size,step,r_web,r_code,loss_web,loss_code
a,70M,100,0.75,0.25,3.1,1.9
b,70M,100,0.5,0.5,3.2,1.7
c,1.4B,200,0.25,0.75,2.9,1.2
"""


def test_parse_good_table():
    t = parse_table(GOOD, "good.csv")
    assert t.train_domains == ("web", "code") and t.val_domains == ("web", "code")
    np.testing.assert_allclose(t.mixtures[1], [0.5, 0.5])
    np.testing.assert_allclose(t.sizes, [7e7, 7e7, 1.4e9])
    assert t.steps.tolist() == [100, 100, 200]
    assert len(t.select(step=100)) == 2 and len(t.select(size=1.4e9)) == 1
    back = parse_table(format_table(t))
    np.testing.assert_allclose(back.losses, t.losses)
    np.testing.assert_allclose(back.sizes, t.sizes)


def test_published_table_loads():
    t = read_table(DATA)
    assert len(t) == 30 and t.train_domains == ("Github", "Pile-CC")
    assert sorted(set(t.sizes.tolist())) == [18915328.0, 85056000.0]


def test_parse_size_suffixes():
    assert parse_size("70M") == 7e7 and parse_size("1.5b") == 1.5e9 and parse_size("3e3") == 3e3
    with pytest.raises(ValueError):
        parse_size("big")


@pytest.mark.parametrize("text,match", [
    ("", "empty table"),
    ("r_web,loss_web\n1,2\n", r"need >= 2 proportion columns"),
    ("r_a,r_b\n0.5,0.5\n", "need >= 1 loss column"),
    ("r_a,r_b,loss_a,lost_b\n0.5,0.5,1,1\n", r"column 'lost_b' is not recognised"),
    ("r_a,r_b,loss_a,r_a\n0.5,0.5,1,1\n", "appears twice"),
    ("r_a,r_b,loss_a\n0.5,0.5\n", r"line 2: 2 cells for 3 columns"),
    ("r_a,r_b,loss_a\n0.5,0.5,x\n", r"line 2, column 'loss_a': 'x' is not a number"),
    ("r_a,r_b,loss_a\n0.5,0.5,\n", r"line 2, column 'loss_a': empty cell"),
    ("r_a,r_b,loss_a\n0.6,0.5,1\n", r"line 2: proportions r_a\+r_b sum to 1.1"),
    ("r_a,r_b,loss_a\n1.5,-0.5,1\n", r"line 2, column 'r_b': proportion -0.5 is negative"),
    ("r_a,r_b,loss_a\n0.5,0.5,0\n", r"line 2, column 'loss_a': loss 0.0 must be > 0"),
    ("r_a,r_b,loss_a\n0.5,0.5,inf\n", "not finite"),
    ("r_a,r_b,loss_a,step\n0.5,0.5,1,1.5\n", r"column 'step'"),
    ("r_a,r_b,loss_a,model_size\n0.5,0.5,1,-3\n", r"column 'model_size'"),
    ("r_a,r_b,loss_a\n0.5,0.5,1\n\n0.5,0.5,2\n", r"lines 2 and 4: same mixture"),
    ("r_a,r_b,loss_a\n", "no data rows"),
])
def test_bad_tables_name_the_problem(text, match):
    with pytest.raises(TableError, match=match):
        parse_table(text, "bad.csv")


def test_errors_name_the_file(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("r_a,r_b,loss_a\n0.5,0.5,oops\n")
    with pytest.raises(TableError, match=str(p).replace("\\", "\\\\") + " line 2"):
        read_table(p)
    with pytest.raises(TableError, match="cannot read"):
        read_table(tmp_path / "missing.csv")


def test_select_errors():
    t = parse_table(GOOD)
    with pytest.raises(TableError, match="no rows with step=5"):
        t.select(step=5)
    with pytest.raises(TableError, match="no 'step' column"):
        parse_table("r_a,r_b,loss_a\n0.5,0.5,1\n").select(step=1)
