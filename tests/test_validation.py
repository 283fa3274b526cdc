import pytest
import torch

from mixstream.validation import Validator, per_domain_loss

D = ["a", "b", "c"]


class Scale(torch.nn.Module):
    def forward(self, x):
        return 2 * x


def seq_loss(model, batch):
    assert not model.training and not torch.is_grad_enabled()
    return model(batch["x"])


def test_mixed_batches_sequence_and_token_weighted():
    model = Scale().train()
    batches = [{"domain": torch.tensor([0, 1, 0]), "x": torch.tensor([1.0, 2.0, 3.0])},
               {"domain": torch.tensor([2]), "x": torch.tensor([4.0])}]
    assert per_domain_loss(seq_loss, model, batches, D) == {"a": 4.0, "b": 4.0, "c": 8.0}
    assert model.training   # restored

    def tok_loss(model, batch):
        return model(batch["x"]), torch.tensor([1.0, 1.0, 3.0])[: len(batch["x"])]
    got = per_domain_loss(tok_loss, model, batches[:1], D, require_all=False)
    assert got == {"a": pytest.approx((2 * 1 + 6 * 3) / 4), "b": 4.0}


def test_per_domain_splits_and_max_batches():
    model = Scale()
    splits = {"a": [{"x": torch.tensor([1.0])}, {"x": torch.tensor([100.0])}],
              "b": [{"x": torch.tensor([2.0, 4.0])}], "c": [{"x": torch.tensor([0.5])}]}
    assert per_domain_loss(seq_loss, model, splits, D, max_batches=1) == \
        {"a": 2.0, "b": 6.0, "c": 1.0}
    v = Validator(seq_loss, model, splits, D, max_batches=1)
    assert v() == v() and v.calls == 2


def test_errors():
    model = Scale()
    with pytest.raises(ValueError, match="no validation samples for domain"):
        per_domain_loss(seq_loss, model, [{"domain": torch.tensor([0]),
                                           "x": torch.tensor([1.0])}], D)
    with pytest.raises(ValueError, match="unknown domain"):
        per_domain_loss(seq_loss, model, {"z": []}, D)
    with pytest.raises(ValueError, match="outside"):
        per_domain_loss(seq_loss, model, [{"domain": torch.tensor([5]),
                                           "x": torch.tensor([1.0])}], D)
    with pytest.raises(ValueError, match="non-finite"):
        per_domain_loss(seq_loss, model, [{"domain": torch.tensor([0]),
                                           "x": torch.tensor([float("inf")])}], D)


def test_named_target_sets_that_are_not_domains():
    model = Scale()
    v = Validator(seq_loss, model, {"target": [{"x": torch.tensor([1.0, 3.0])}],
                                    "code_eval": [{"x": torch.tensor([5.0])}]})
    assert v() == {"target": 4.0, "code_eval": 10.0}
    with pytest.raises(ValueError, match="mapping"):
        Validator(seq_loss, model, [{"x": torch.tensor([1.0])}])
