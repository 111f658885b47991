"""The tokens a video transformer's block runs on, and what its self-attention reads (pure).

A transformer block maps every token of a sequence ``[B, T, C]`` to a new value. The pack
runs a block on fewer tokens in two ways, both chosen per block by the DiT glue
(ocd/comfy_dit.py) and applied by the model family (ocd/host/models.py):

- ``MergedTokens`` (object-centric token merging): similar background tokens are averaged
  into one slot before the block and every token gets its slot's update after it; the
  object's tokens keep slots of their own;
- ``TokenSubset`` (token-subset steps of object-centric sampling): only the object's tokens
  and a margin run; the others keep their value, and their keys/values from the last full
  step serve the subset's self-attention as context (``attention_pool``).

A selection says which token each of its rows stands for (``positions``): the family gives
that row the token's position (RoPE) and modulation, so a subset or a merged slot is
encoded where its token is.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .attention.token_merge import MergePlan


class BlockTokens:
    """Which tokens a block runs on (``reduce``), with whose positions (``positions``), and how
    its outputs reach every token (``expand``)."""

    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, C]`` -> ``[B, n, C]``."""
        raise NotImplementedError

    def positions(self, batch: int) -> torch.Tensor:
        """``[batch, n]`` int64: the token each row stands for."""
        raise NotImplementedError

    def expand(self, x: torch.Tensor, reduced_in: torch.Tensor, reduced_out: torch.Tensor) -> torch.Tensor:
        """The block's output for every token from its output on the reduced rows."""
        raise NotImplementedError

    def key_bias(self) -> torch.Tensor | None:
        """``[B, n]``: log of how many tokens each row's key stands for (proportional
        attention), or None when every row is one token."""
        return None

    def count(self) -> int:
        """Rows the block runs on (per batch row)."""
        raise NotImplementedError


@dataclass(frozen=True)
class MergedTokens(BlockTokens):
    """A merge plan of B rows (``MergePlan``) as a block's tokens."""

    plan: MergePlan

    def reduce(self, x):
        return self.plan.merge(x)

    def positions(self, batch):
        return self.plan.representatives()

    def expand(self, x, reduced_in, reduced_out):
        return self.plan.unmerge_update(x, reduced_in, reduced_out)

    def key_bias(self):
        return self.plan.log_sizes()

    def count(self):
        return self.plan.size


@dataclass(frozen=True)
class TokenSubset(BlockTokens):
    """The tokens ``index`` (``[n]`` int64, ascending) of every batch row."""

    index: torch.Tensor

    def reduce(self, x):
        return x.index_select(1, self.index.to(x.device))

    def positions(self, batch):
        return self.index.expand(batch, -1)

    def expand(self, x, reduced_in, reduced_out):
        out = x.clone()
        out[:, self.index.to(x.device)] = reduced_out.to(out.dtype)
        return out

    def count(self):
        return int(self.index.numel())


@dataclass
class KeptKeys:
    """Keys/values of the tokens outside a token subset, kept from a full step for one block:
    ``k``, ``v`` ``[B, m, C]`` (after the positional encoding), ``bias`` ``[B, m]`` (log sizes
    of merged keys) or None."""

    k: torch.Tensor
    v: torch.Tensor
    bias: torch.Tensor | None = None

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.k, self.v, self.bias) if t is not None)


def attention_pool(k: torch.Tensor, v: torch.Tensor, key_tokens: torch.Tensor, key_bias: torch.Tensor | None = None,
                   merge: MergePlan | None = None, keep: torch.Tensor | None = None,
                   context: KeptKeys | None = None):
    """The keys/values a block's self-attention reads, and their logit bias.

    Args:
     - k, v ``[B, n, C]``: the keys/values of the rows the block runs on (after the positional
       encoding); key_tokens ``[B, n]``: the token each row stands for; key_bias ``[B, n]`` or
       None: log of how many tokens each row holds (rows that are merged tokens)
     - merge: a plan over the n rows (B rows) when each row is one token: the keys/values are
       merged here, their log sizes the bias (``keys_values`` merging: every query stays)
     - keep ``[T]`` bool or None: the tokens whose keys/values later token-subset steps read as
       context; returns those keys (the rows whose token is in ``keep``) as ``KeptKeys``
     - context: keys/values kept from a full step, appended after the rows' own
    Returns ``(k, v, bias or None, kept or None)``; bias ``[B, M]`` for ``M`` keys.
    """
    if merge is not None:  # rows that are whole tokens (keys_values merging): key_bias is None
        key_tokens = torch.gather(key_tokens.to(merge.slot.device), 1, merge.representatives())
        k, v, key_bias = merge.merge(k), merge.merge(v), merge.log_sizes(k.dtype)
    kept = None
    if keep is not None:
        rows = keep.to(key_tokens.device)[key_tokens]  # [B, n]
        counts = rows.sum(1)
        if bool((counts == counts[0]).all()):
            m = int(counts[0])
            order = rows.to(torch.int8).argsort(dim=1, descending=True, stable=True)[:, :m]
            pick = lambda t: torch.gather(t, 1, order.unsqueeze(-1).expand(-1, -1, t.shape[-1]))  # noqa: E731
            kept = KeptKeys(pick(k), pick(v), None if key_bias is None else torch.gather(key_bias, 1, order))
        else:  # rows of different plans keep different counts: keep each row's, padded by -inf bias
            m = int(counts.max())
            order = rows.to(torch.int8).argsort(dim=1, descending=True, stable=True)[:, :m]
            pick = lambda t: torch.gather(t, 1, order.unsqueeze(-1).expand(-1, -1, t.shape[-1]))  # noqa: E731
            valid = torch.arange(m, device=rows.device)[None] < counts[:, None]
            base = torch.zeros_like(order, dtype=k.dtype) if key_bias is None else torch.gather(key_bias, 1, order)
            kept = KeptKeys(pick(k), pick(v), base.masked_fill(~valid, float("-inf")))
    if context is not None:
        n = k.shape[1]
        k = torch.cat([k, context.k.to(k)], 1)
        v = torch.cat([v, context.v.to(v)], 1)
        if key_bias is not None or context.bias is not None:
            own = key_bias if key_bias is not None else k.new_zeros(k.shape[0], n)
            other = context.bias.to(k) if context.bias is not None else k.new_zeros(k.shape[0], context.k.shape[1])
            key_bias = torch.cat([own.to(k), other], 1)
    return k, v, key_bias, kept
