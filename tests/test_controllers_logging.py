"""Controllers report through ``logging`` (no handlers of their own), at DEBUG per decision."""

from __future__ import annotations

import logging

import torch
from controller_fakes import FakeStream

from mixstream.controllers import ODM, Controller, StaticMixture

LOGGER = "mixstream.controllers.base"


class _ByValidation(Controller):
    """Weights proportional to the validation losses (exercises the base class only)."""

    def update(self, fb):
        return None

    def update_validation(self, losses):
        return losses


def test_weight_change_is_logged_at_debug(caplog):
    stream = FakeStream(["a", "b"])
    ctrl = ODM(stream, warmup=0)
    with caplog.at_level(logging.DEBUG, logger="mixstream"):
        for _ in range(3):
            new = ctrl.feedback(torch.tensor([0, 1]), torch.tensor([1.0, 3.0]))
    assert new is not None
    rec = [r for r in caplog.records if r.name == LOGGER]
    assert rec and all(r.levelno == logging.DEBUG for r in rec)
    msg = rec[-1].getMessage()
    assert msg.startswith("ODM step 3: sampling weights ")
    assert f"a={new['a']:.4g}" in msg and f"from sample {stream.log[-1][0]}" in msg


def test_unchanged_weights_and_validation_are_logged(caplog):
    with caplog.at_level(logging.DEBUG, logger="mixstream"):
        StaticMixture(FakeStream(["a", "b"]), [1.0, 1.0])  # the stream's own weights
    assert caplog.records[-1].getMessage() == "StaticMixture step 0: weights unchanged"
    ctrl = _ByValidation(FakeStream(["a", "b"]))
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="mixstream"):
        ctrl.observe_validation({"a": 2.0, "b": 1.5})
    assert [r.getMessage() for r in caplog.records] == [
        "_ByValidation step 0: validation losses a=2 b=1.5",
        "_ByValidation step 0: sampling weights a=0.5714 b=0.4286 from sample 0"]


def test_nothing_is_logged_above_debug_and_no_handler_is_installed(caplog):
    stream = FakeStream(["a", "b"])
    ctrl = ODM(stream, warmup=0)
    with caplog.at_level(logging.INFO, logger="mixstream"):
        for _ in range(3):
            ctrl.feedback(torch.tensor([0, 1]), torch.tensor([1.0, 3.0]))
    assert not caplog.records
    for name in (LOGGER, "mixstream.controllers", "mixstream"):  # the application decides
        assert all(type(h) is logging.NullHandler for h in logging.getLogger(name).handlers)
