import numpy as np
import pytest
import torch
from controller_fakes import FakeStream

from mixstream.controllers.base import Controller, Requirements
from mixstream.feedback import (
    COUNT,
    EXCESS,
    SEQ_LOSS,
    TOK_LOSS,
    TOKENS,
    aggregate,
    to_feedback,
)


def test_per_sequence_aggregation():
    out = aggregate(torch.tensor([0, 1, 0]), 3, torch.tensor([1.0, 2.0, 3.0]),
                    tokens=torch.tensor([1, 2, 3]))
    assert out[COUNT].tolist() == [2, 1, 0]
    assert out[TOKENS].tolist() == [4, 2, 0]
    assert out[SEQ_LOSS].tolist() == [4, 2, 0]
    assert out[TOK_LOSS].tolist() == [10, 4, 0]
    fb = to_feedback(1, out, has_loss=True, has_ref=False, has_tokens=True)
    assert fb.seq_mean[0] == 2 and fb.tok_mean[0] == 2.5 and np.isnan(fb.tok_mean[2])
    assert fb.present.tolist() == [True, True, False]


def test_per_token_aggregation_masks_and_clips_per_token():
    loss = torch.tensor([[1.0, 5.0, 9.0], [2.0, 2.0, 2.0]])
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])            # 2nd sequence has no loss tokens
    ref = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    out = aggregate(torch.tensor([0, 1]), 2, loss, mask=mask, ref_loss=ref)
    assert out[COUNT].tolist() == [1, 0]
    assert out[TOKENS].tolist() == [2, 0]
    assert out[SEQ_LOSS].tolist() == [3, 0]
    assert out[TOK_LOSS].tolist() == [6, 0]
    assert out[EXCESS].tolist() == [4, 0]   # max(1-2,0) + max(5-1,0); masked token ignored


def test_aggregation_errors():
    with pytest.raises(ValueError, match="integer"):
        aggregate(torch.tensor([0.0]), 2, torch.tensor([1.0]))
    with pytest.raises(ValueError, match="out of range"):
        aggregate(torch.tensor([-1]), 2, torch.tensor([1.0]))
    with pytest.raises(ValueError, match="2 per-sequence losses"):
        aggregate(torch.tensor([0]), 2, torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="mask shape"):
        aggregate(torch.tensor([0]), 2, torch.ones(1, 3), mask=torch.ones(1, 2))
    with pytest.raises(ValueError, match="shape"):
        aggregate(torch.tensor([0]), 2, torch.ones(1, 2, 2))


class Echo(Controller):
    """Minimal controller: pushes the normalised per-domain mean loss."""

    requires = Requirements(train_losses=True)

    def update(self, fb):
        m = np.nan_to_num(fb.seq_mean)
        return m if m.sum() > 0 else None


def test_base_pushes_and_skips_unchanged():
    s = FakeStream(["a", "b"])
    c = Echo(s)
    assert s.attached == [c]
    w = c.feedback(torch.tensor([0, 1]), torch.tensor([1.0, 3.0]))
    assert w == {"a": 0.25, "b": 0.75} and s.weights == w and c.last_from_sample == 0
    assert c.feedback(torch.tensor([0, 1]), torch.tensor([1.0, 3.0])) is None  # unchanged
    assert len(s.log) == 1
    with pytest.raises(ValueError, match="negative"):
        c._push(np.array([-1.0, 2.0]))


def test_load_state_checks_type_and_domains():
    c = Echo(FakeStream(["a", "b"]))
    st = c.state_dict()
    with pytest.raises(ValueError, match="not 'Other'"):
        type("Other", (Echo,), {})(FakeStream(["a", "b"])).load_state_dict(st)
    with pytest.raises(ValueError, match="domains"):
        Echo(FakeStream(["a", "c"])).load_state_dict(st)


def test_validation_and_gradient_channels_refuse_when_unused():
    c = Echo(FakeStream(["a", "b"]))
    with pytest.raises(ValueError, match="does not use validation"):
        c.observe_validation({"a": 1.0, "b": 2.0})
    with pytest.raises(NotImplementedError):
        c.observe_gradients({})
    with pytest.raises(NotImplementedError):
        c.run_phase(None)  # type: ignore[arg-type]
