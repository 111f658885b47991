"""ocd.tokens: the tokens a transformer block runs on, and what its self-attention reads."""
from __future__ import annotations

import torch

from ocd.attention.token_merge import MergePlan
from ocd.tokens import KeptKeys, MergedTokens, TokenSubset, attention_pool


def test_a_subset_runs_its_tokens_and_leaves_the_rest():
    x = torch.randn(2, 6, 4)
    subset = TokenSubset(torch.tensor([1, 4]))
    reduced = subset.reduce(x)
    assert torch.equal(reduced, x[:, [1, 4]]) and subset.positions(2).tolist() == [[1, 4], [1, 4]]
    out = subset.expand(x, reduced, reduced + 1)
    assert torch.equal(out[:, [1, 4]], x[:, [1, 4]] + 1) and torch.equal(out[:, [0, 2, 3, 5]], x[:, [0, 2, 3, 5]])
    everything = TokenSubset(torch.arange(6))
    assert torch.equal(everything.expand(x, everything.reduce(x), x * 2), x * 2)


def test_merged_tokens_weigh_keys_by_their_size():
    plan = MergePlan(torch.tensor([[0, 0, 1, 2]]), 3)
    tokens = MergedTokens(plan)
    assert torch.allclose(tokens.key_bias(), torch.log(torch.tensor([[2.0, 1.0, 1.0]])))
    assert tokens.count() == 3 and tokens.positions(1).tolist() == [[0, 2, 3]]


def test_attention_pool_keeps_the_keys_outside_and_reads_them_back():
    k, v = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    tokens = torch.arange(5).expand(2, 5)
    keep = torch.tensor([False, True, False, True, True])
    k2, v2, bias, kept = attention_pool(k, v, tokens, keep=keep)
    assert torch.equal(k2, k) and bias is None
    assert torch.equal(kept.k, k[:, [1, 3, 4]]) and torch.equal(kept.v, v[:, [1, 3, 4]])
    q_k, q_v = k[:, [0, 2]], v[:, [0, 2]]  # a subset step runs tokens 0 and 2
    k3, v3, bias3, _ = attention_pool(q_k, q_v, torch.tensor([[0, 2], [0, 2]]), context=kept)
    assert k3.shape == (2, 5, 3) and bias3 is None
    assert torch.equal(k3[:, 2:], kept.k) and torch.equal(v3[:, :2], q_v)


def test_attention_pool_merges_keys_values_with_their_log_sizes():
    k, v = torch.randn(1, 4, 2), torch.randn(1, 4, 2)
    plan = MergePlan(torch.tensor([[0, 0, 1, 2]]), 3, torch.tensor([[1, 2, 3]]))
    k2, v2, bias, kept = attention_pool(k, v, torch.arange(4)[None], merge=plan,
                                        keep=torch.tensor([False, True, True, False]))
    assert torch.allclose(k2[0, 0], k[0, :2].mean(0)) and torch.allclose(bias, torch.log(torch.tensor([[2., 1., 1.]])))
    # slots stand for their representative tokens 1, 2, 3: tokens 1 and 2 are kept
    assert torch.allclose(kept.k, k2[:, :2]) and torch.allclose(kept.bias, bias[:, :2])
    context = KeptKeys(torch.randn(1, 2, 2), torch.randn(1, 2, 2))
    _, _, bias2, _ = attention_pool(k, v, torch.arange(4)[None], merge=plan, context=context)
    assert bias2.shape == (1, 5) and torch.equal(bias2[0, 3:], torch.zeros(2))
