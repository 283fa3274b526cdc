"""mixstream.losses against a brute-force loop over every position."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mixstream.losses import (
    batch_losses,
    document_attention_mask,
    document_position_ids,
    per_sequence_loss,
    per_sequence_loss_and_tokens,
    per_sequence_tokens,
)


def brute(logits, ids, loss_mask=None, labels=None, attention_mask=None, document_ids=None,
          ignore_index=-100, reduction="mean"):
    """Loop over (sequence, position): the rules in the module docstring, written plainly."""
    b, n, _ = logits.shape
    losses, tokens = [], []
    for i in range(b):
        total, count = 0.0, 0
        for t in range(n - 1):
            target = int(ids[i, t + 1]) if labels is None else int(labels[i, t + 1])
            if labels is not None and target == ignore_index:
                continue
            if attention_mask is not None and not (attention_mask[i, t] and
                                                   attention_mask[i, t + 1]):
                continue
            if loss_mask is not None and not loss_mask[i, t + 1]:
                continue
            if document_ids is not None and document_ids[i, t] != document_ids[i, t + 1]:
                continue
            logp = torch.log_softmax(logits[i, t].double(), dim=-1)
            total -= float(logp[target])
            count += 1
        losses.append(total / count if (reduction == "mean" and count) else total)
        tokens.append(count)
    return losses, tokens


@st.composite
def cases(draw):
    b = draw(st.integers(1, 4))
    n = draw(st.integers(1, 9))
    v = draw(st.integers(2, 7))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, n, v, generator=g) * 3
    ids = torch.randint(0, v, (b, n), generator=g)
    kw = {}
    if draw(st.booleans()):
        kw["loss_mask"] = torch.randint(0, 2, (b, n), generator=g, dtype=torch.uint8)
    if draw(st.booleans()):
        labels = ids.clone()
        labels[torch.rand(b, n, generator=g) < 0.3] = -100
        kw["labels"] = labels
    if draw(st.booleans()):  # left or right padding, or holes
        kw["attention_mask"] = (torch.rand(b, n, generator=g) < 0.8).long()
    if draw(st.booleans()):
        starts = torch.rand(b, n, generator=g) < 0.3
        kw["document_ids"] = torch.cumsum(starts.int(), dim=1).to(torch.int32)
    reduction = draw(st.sampled_from(["mean", "sum"]))
    return logits, ids, kw, reduction


@settings(max_examples=150, deadline=None)
@given(cases())
def test_matches_brute_force(case):
    logits, ids, kw, reduction = case
    loss, tokens = per_sequence_loss_and_tokens(logits, ids, reduction=reduction, **kw)
    want, want_tokens = brute(logits, ids, reduction=reduction, **kw)
    assert tokens.tolist() == want_tokens
    assert per_sequence_tokens(ids, **kw).tolist() == want_tokens
    torch.testing.assert_close(loss.double(), torch.tensor(want, dtype=torch.float64),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(per_sequence_loss(logits, ids, reduction=reduction, **kw), loss)
    assert loss.dtype == torch.float32 and loss.shape == (ids.shape[0],)


def test_plain_loss_equals_hf_style_mean_and_is_differentiable():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, 11, generator=g, requires_grad=True)
    ids = torch.randint(0, 11, (3, 6), generator=g)
    loss = per_sequence_loss(logits, ids)
    ref = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), ids[:, 1:].reshape(-1),
                                            reduction="none").view(3, 5).mean(1)
    torch.testing.assert_close(loss, ref)
    loss.sum().backward()
    assert logits.grad is not None and logits.grad[:, -1].abs().sum() == 0


def test_prompt_tokens_and_document_boundaries_do_not_count():
    # two packed documents [p p r r | p r]: only response tokens are targets, and the
    # first token of document 2 is never predicted from document 1
    ids = torch.tensor([[5, 6, 7, 8, 9, 1]])
    loss_mask = torch.tensor([[0, 0, 1, 1, 0, 1]])
    docs = torch.tensor([[0, 0, 0, 0, 1, 1]])
    assert per_sequence_tokens(ids, loss_mask=loss_mask, document_ids=docs).tolist() == [3]
    assert per_sequence_tokens(ids, loss_mask=torch.tensor([[0, 0, 1, 1, 1, 1]]),
                               document_ids=docs).tolist() == [3]  # not 4: boundary excluded
    assert per_sequence_tokens(ids, loss_mask=torch.tensor([[0, 0, 1, 1, 1, 1]])).tolist() == [4]


def test_no_counted_target_gives_zero_loss_and_zero_tokens():
    logits = torch.randn(2, 4, 5)
    ids = torch.zeros(2, 4, dtype=torch.long)
    mask = torch.tensor([[0, 0, 0, 0], [0, 1, 1, 1]])
    loss, tokens = per_sequence_loss_and_tokens(logits, ids, loss_mask=mask)
    assert tokens.tolist() == [0, 3] and loss[0].item() == 0.0 and math.isfinite(loss[1].item())
    loss1, tokens1 = per_sequence_loss_and_tokens(logits[:, :1], ids[:, :1])
    assert loss1.tolist() == [0.0, 0.0] and tokens1.tolist() == [0, 0]


def test_uint16_token_ids_and_low_precision_logits():
    import numpy as np

    ids = torch.from_numpy(np.array([[1, 2, 3], [3, 2, 1]], dtype=np.uint16).astype(np.int32))
    logits = torch.randn(2, 3, 4).to(torch.bfloat16)
    loss = per_sequence_loss(logits, ids)
    ref = per_sequence_loss(logits.float(), ids.long())
    torch.testing.assert_close(loss, ref)


def test_batch_losses_reads_the_batch_columns():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 7, generator=g)
    batch = {"input_ids": torch.randint(0, 7, (2, 5), generator=g),
             "loss_mask": torch.tensor([[0, 1, 1, 0, 1], [1, 1, 1, 1, 1]], dtype=torch.uint8),
             "document_ids": torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.int32),
             "domain": torch.tensor([0, 1])}
    loss, tokens = batch_losses(logits, batch)
    want, want_tokens = brute(logits, batch["input_ids"], loss_mask=batch["loss_mask"],
                              document_ids=batch["document_ids"])
    assert tokens.tolist() == want_tokens == [3, 4]
    torch.testing.assert_close(loss.double(), torch.tensor(want, dtype=torch.float64))
    with pytest.raises(KeyError, match="no 'tokens' column"):
        batch_losses(logits, batch, token_column="tokens")


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="loss_mask has shape"):
        per_sequence_loss(torch.randn(1, 4, 3), torch.zeros(1, 4, dtype=torch.long),
                          loss_mask=torch.ones(1, 3))
    with pytest.raises(ValueError, match="logits must be"):
        per_sequence_loss(torch.randn(1, 3, 3), torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="reduction"):
        per_sequence_loss(torch.randn(1, 4, 3), torch.zeros(1, 4, dtype=torch.long),
                          reduction="none")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.booleans(), min_size=1, max_size=10), min_size=1, max_size=3)
       .filter(lambda rows: len({len(r) for r in rows}) == 1))
def test_document_positions_and_attention_mask(rows):
    starts = torch.tensor(rows)
    docs = torch.cumsum(starts.int(), dim=1)
    pos = document_position_ids(docs)
    mask = document_attention_mask(docs)
    b, n = docs.shape
    for i in range(b):
        for t in range(n):
            first = t
            while first > 0 and docs[i, first - 1] == docs[i, t]:
                first -= 1
            assert pos[i, t] == t - first
            for j in range(n):
                assert bool(mask[i, t, j]) == (j <= t and bool(docs[i, j] == docs[i, t]))
