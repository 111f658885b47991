"""Object-centric token merging: bipartite soft matching with a foreground penalty.

After tomesd's ``merge.py`` (Bolya & Hoffman 2023): tokens are split into destinations (one
per ``sx x sy`` cell of the token grid) and sources (the rest); each source finds its most
similar destination (cosine similarity); the ``r`` sources with the best matches are merged
(averaged) into their destination, the others stay. After attention, "unmerge" copies each
destination's output back to the sources merged into it.

What OCD (arXiv 2401.05735) adds, and what this module owns:
- destinations are re-drawn per frame, deterministically from (seed, absolute frame, step);
- the match score of foreground (object) sources is lowered by a monotone penalty, so the
  merged queries come from the background and the object's outputs stay at full resolution
  (a key/value pool, read by every query, is by default only kept from merging across the
  object's boundary: ``TokenMergeSettings.protect_keys``);
- a token set may span several frames (a cross-frame key/value pool): sources of one frame
  can merge into destinations of another, where most of a video's redundancy is;
- merges can be recorded during one sampling pass and replayed in a later one
  (``MergeStore``), so that two passes (inversion and editing) merge the same tokens.

A merge is represented by a ``MergePlan``: for each token, the slot it occupies in the merged
sequence. ``merge`` is a scatter-mean by slot, ``unmerge`` a gather by slot.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Sequence

import torch

from ..errors import OCDInputError
from ..masks import grid
from ..shared import SharedAcrossClones

# Cosine scores lie in [-1, 1]: a penalty of more than the width of that range puts every fully
# foreground source below every background source. The margin covers fp16 rounding.
FOREGROUND_PENALTY = 2.05

# Sources are matched in chunks of this many score-matrix elements (16 MiB in float32), so a
# key/value pool of many frames never materialises its whole (sources x destinations) score
# matrix: with memory-efficient attention kernels (GPU) that matrix would otherwise be the
# largest tensor of the whole attention step (8 frames at 64x64 tokens: 24576 x 8192).
_SCORE_CHUNK_ELEMENTS = 1 << 22

PAIRING_MODES = ("off", "record", "replay")


# ---------------------------------------------------------------------------------------------
# Destinations
# ---------------------------------------------------------------------------------------------

def frame_generator(seed: int, frame: int, step: int) -> torch.Generator:
    """A CPU generator seeded from (seed, absolute frame index, step), so that destinations
    differ per frame and per step but are the same on every run and in every context window."""
    mixed = (int(seed) * 0x9E3779B97F4A7C15 + int(frame) * 0xBF58476D1CE4E5B9
             + int(step) * 0x94D049BB133111EB) % (1 << 63)
    return torch.Generator(device="cpu").manual_seed(mixed)


def draw_destination_choice(h: int, w: int, sx: int, sy: int, generator: torch.Generator) -> torch.Tensor:
    """Which token of each ``sx x sy`` cell is the destination: ``[h // sy, w // sx, 1]`` int64
    in ``[0, sx * sy)``. Consumes the generator exactly as tomesd 0.1.3 does."""
    return torch.randint(sy * sx, size=(h // sy, w // sx, 1), generator=generator)


def destination_mask(h: int, w: int, sx: int, sy: int, choice: torch.Tensor) -> torch.Tensor:
    """Boolean ``[h * w]``: True where the token is a destination (row-major token order).

    ``choice`` is ``draw_destination_choice``'s output. Rows/columns left over when the grid
    does not divide by the stride are sources, as in tomesd.
    """
    hsy, wsx = h // sy, w // sx
    cells = torch.zeros(hsy, wsx, sy * sx, dtype=torch.bool)
    cells.scatter_(2, choice.cpu(), True)
    cells = cells.view(hsy, wsx, sy, sx).transpose(1, 2).reshape(hsy * sy, wsx * sx)
    grid = torch.zeros(h, w, dtype=torch.bool)
    grid[: hsy * sy, : wsx * sx] = cells
    return grid.reshape(-1)


# ---------------------------------------------------------------------------------------------
# The plan and the matching
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MergePlan:
    """Where each token goes: ``slot[b, t]`` is token t's position in the merged sequence of
    row b (``[B, T]`` int64), ``size`` the merged length ``T - r``. Several tokens sharing a slot
    were merged (averaged). Slots are laid out as tomesd's: unmerged sources (best score
    first), then destinations."""

    slot: torch.Tensor
    size: int
    # [B, size]: the token each slot stands for where one position is needed (a transformer's
    # positional encoding, its per-token modulation): a merged slot's destination, an unmerged
    # token itself. None: the lowest token index in the slot.
    representative: torch.Tensor | None = None

    @property
    def num_tokens(self) -> int:
        return self.slot.shape[-1]

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., B, T, C]`` -> ``[..., B, size, C]``: the mean of the tokens in each slot."""
        *lead, B, T, C = x.shape
        rows = x.numel() // (T * C)  # every (leading, B) row, flattened
        # One index_add over all rows (much faster than scatter_reduce "mean" on the CPU):
        # row i's slots are offset by i * size.
        offsets = torch.arange(rows, device=x.device).view(-1, B, 1) * self.size
        index = (self.slot.unsqueeze(0) + offsets).reshape(-1)
        sums = x.new_zeros(rows * self.size, C).index_add_(0, index, x.reshape(-1, C))
        counts = torch.zeros(B, self.size, dtype=x.dtype, device=x.device)
        counts.scatter_add_(1, self.slot, torch.ones_like(self.slot, dtype=x.dtype))
        return sums.view(*lead, B, self.size, C) / counts.unsqueeze(-1)

    def unmerge(self, y: torch.Tensor) -> torch.Tensor:
        """``[..., B, size, C]`` -> ``[..., B, T, C]``: every token takes its slot's value."""
        index = self.slot.unsqueeze(-1).expand(*y.shape[:-2], self.num_tokens, y.shape[-1])
        return torch.gather(y, -2, index)

    def log_sizes(self, dtype=torch.float32) -> torch.Tensor:
        """``[B, size]``: log of how many tokens each slot holds. Added to the attention
        logits of merged keys (ToMe's proportional attention, Bolya et al. 2023, sec. 3), a
        slot of m tokens weighs as much as its m tokens did: merging m identical keys/values
        then leaves attention unchanged, and a region whose keys are merged heavily (the
        background, under foreground protection) keeps its share of every query's attention."""
        counts = torch.zeros(self.slot.shape[0], self.size, dtype=dtype, device=self.slot.device)
        counts.scatter_add_(1, self.slot, torch.ones_like(self.slot, dtype=dtype))
        return counts.log()

    def merged_away(self) -> torch.Tensor:
        """Boolean ``[B, T]``: tokens that share their slot with another token (merged)."""
        counts = torch.zeros(self.slot.shape[0], self.size, dtype=torch.int64, device=self.slot.device)
        counts.scatter_add_(1, self.slot, torch.ones_like(self.slot))
        return torch.gather(counts, 1, self.slot) > 1

    def slot_sizes(self) -> torch.Tensor:
        """``[B, size]`` int64: how many tokens each slot holds."""
        counts = torch.zeros(self.slot.shape[0], self.size, dtype=torch.int64, device=self.slot.device)
        return counts.scatter_add_(1, self.slot, torch.ones_like(self.slot))

    def representatives(self) -> torch.Tensor:
        """``[B, size]``: the token each slot stands for (see ``representative``)."""
        if self.representative is not None:
            return self.representative
        tokens = torch.arange(self.num_tokens, device=self.slot.device).expand_as(self.slot)
        first = torch.full((self.slot.shape[0], self.size), self.num_tokens, dtype=torch.int64, device=self.slot.device)
        return first.scatter_reduce_(1, self.slot, tokens, "amin")

    def unmerge_update(self, x: torch.Tensor, merged_in: torch.Tensor, merged_out: torch.Tensor) -> torch.Tensor:
        """The outputs of a residual block run on merged tokens, for every token.

        x ``[..., B, T, C]`` (the block's input), merged_in ``[..., B, size, C]`` (``merge(x)``),
        merged_out (the block's output on it). A token alone in its slot takes its output as
        is; a merged token keeps its own residual stream and adds its slot's update,
        ``x + unmerge(out - in)``, so tokens merged together stay apart where they were apart.
        """
        alone = torch.gather(self.slot_sizes(), 1, self.slot) == 1  # [B, T]
        update = self.unmerge(merged_out - merged_in)
        return torch.where(alone.unsqueeze(-1), self.unmerge(merged_out), x + update)

    def with_prefix(self, prefix: int) -> "MergePlan":
        """The plan for ``prefix`` unmerged tokens followed by this plan's tokens."""
        if prefix == 0:
            return self
        B = self.slot.shape[0]
        head = torch.arange(prefix, device=self.slot.device).expand(B, prefix)
        return MergePlan(torch.cat([head, self.slot + prefix], 1), self.size + prefix,
                         torch.cat([head, self.representatives() + prefix], 1))

    def row(self, b: int) -> "MergePlan":
        rep = None if self.representative is None else self.representative[b : b + 1]
        return MergePlan(self.slot[b : b + 1], self.size, rep)

    def repeat_rows(self, times: int) -> "MergePlan":
        """The plan for ``times`` groups of these rows, group-major (the CFG groups of a batch)."""
        rep = self.representatives().repeat(times, 1)
        return MergePlan(self.slot.repeat(times, 1), self.size, rep)

    @staticmethod
    def stack(rows: Sequence["MergePlan"]) -> "MergePlan":
        sizes = {p.size for p in rows}
        if len(sizes) != 1:
            raise ValueError(f"cannot stack merge plans of different merged sizes {sorted(sizes)}")
        rep = None
        if all(p.representative is not None for p in rows):
            rep = torch.cat([p.representative for p in rows])
        return MergePlan(torch.cat([p.slot for p in rows]), sizes.pop(), rep)

    @staticmethod
    def identity(batch: int, tokens: int, device=None) -> "MergePlan":
        slot = torch.arange(tokens, device=device).expand(batch, tokens).contiguous()
        return MergePlan(slot, tokens, slot)


def _best_match(a: torch.Tensor, b: torch.Tensor, fg_src=None, fg_dst=None, penalty=None):
    """For each row of ``a`` [B, Ns, C], its best cosine score and index in ``b`` [B, Nd, C]
    (both already unit-norm). With ``penalty``, an edge loses ``penalty * |fg_src - fg_dst|``
    (foreground weights [B, Ns], [B, Nd]). Computed over chunks of sources to bound memory."""
    chunk = max(1, _SCORE_CHUNK_ELEMENTS // max(1, b.shape[0] * b.shape[1]))
    best, index = [], []
    for start in range(0, a.shape[1], chunk):
        scores = a[:, start : start + chunk] @ b.transpose(-1, -2)
        if penalty is not None:  # in place: one more chunk-sized tensor, not three
            crossing = fg_src[:, start : start + chunk, None] - fg_dst[:, None, :]
            scores.sub_(crossing.abs_().mul_(penalty))
        m, i = scores.max(dim=-1)
        best.append(m)
        index.append(i)
    return torch.cat(best, dim=1), torch.cat(index, dim=1)


def bipartite_soft_matching(
    metric: torch.Tensor,
    is_destination: torch.Tensor,
    r: int,
    foreground: torch.Tensor | None = None,
    protection: float = 0.0,
    protect_sources: bool = True,
) -> MergePlan:
    """Object-centric bipartite soft matching.

    Args:
     - metric [B, T, C]: features whose cosine similarity decides the merges (B token sets:
       frames, or pools of several frames)
     - is_destination [B, T] bool: destinations (the same count in every row); the rest are
       sources
     - r: sources to merge away per row (capped at the number of sources)
     - foreground [B, T] in [0, 1] or None: how much each token belongs to the object
     - protection in [0, 1]: 0 = plain ToMe; 1 = no foreground source is merged while a
       background source remains, and no token is merged across the object's boundary
       while a same-side destination exists. ``protection * FOREGROUND_PENALTY`` times the
       foreground weight is subtracted from a source's best score, and times
       ``|fg_src - fg_dst|`` from every edge (monotone: cosine scores can be negative, so
       scaling them down would not lower them)
     - protect_sources: False keeps only the edge penalty: tokens merge by similarity alone,
       but never across the object's boundary (used for key/value pools, see
       ``TokenMergeSettings.protect_keys``)
    Returns the MergePlan (slots ``[B, T]``, merged length ``T - r``).
    """
    B, T, _ = metric.shape
    num_dst = int(is_destination[0].sum())
    r = min(int(r), T - num_dst)
    if r <= 0:
        return MergePlan.identity(B, T, metric.device)

    with torch.no_grad():
        # Destinations first, then sources; each in token order (tomesd's dst|src split).
        order = (~is_destination).to(torch.int64).argsort(dim=1, stable=True).to(metric.device)
        b_idx, a_idx = order[:, :num_dst], order[:, num_dst:]

        def split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            C = x.shape[-1]
            src = torch.gather(x, 1, a_idx.unsqueeze(-1).expand(B, T - num_dst, C))
            dst = torch.gather(x, 1, b_idx.unsqueeze(-1).expand(B, num_dst, C))
            return src, dst

        # Cosine similarity of every source to every destination; keep each source's best.
        # Object-centric weighting: an edge across the object's boundary is a worse match
        # (it would average object and background), and foreground sources sink in the
        # ranking (they are merged last, and then into object destinations).
        metric = metric / metric.norm(dim=-1, keepdim=True)
        a, b = split(metric)
        penalty = fg_src = fg_dst = None
        if foreground is not None and protection > 0:
            penalty = protection * FOREGROUND_PENALTY
            foreground = foreground.to(metric)
            fg_src, fg_dst = torch.gather(foreground, 1, a_idx), torch.gather(foreground, 1, b_idx)
        node_max, node_idx = _best_match(a, b, fg_src, fg_dst, penalty)
        if penalty is not None and protect_sources:
            node_max = node_max - penalty * fg_src

        # The r best-matched sources are merged, greedily.
        edge_idx = node_max.argsort(dim=-1, descending=True)
        unm_idx = edge_idx[:, r:]  # unmerged sources, best score first
        src_idx = edge_idx[:, :r]  # merged sources
        dst_idx = torch.gather(node_idx, 1, src_idx)  # their destinations

        # Slots: [unmerged sources | destinations]; merged sources share their destination's.
        unm_len = unm_idx.shape[1]
        positions = torch.arange(T, device=metric.device).expand(B, T)
        slot = torch.empty(B, T, dtype=torch.int64, device=metric.device)
        slot.scatter_(1, torch.gather(a_idx, 1, unm_idx), positions[:, :unm_len])
        slot.scatter_(1, b_idx, unm_len + positions[:, :num_dst])
        slot.scatter_(1, torch.gather(a_idx, 1, src_idx), unm_len + dst_idx)
        representative = torch.cat([torch.gather(a_idx, 1, unm_idx), b_idx], dim=1)
    return MergePlan(slot, unm_len + num_dst, representative)


# ---------------------------------------------------------------------------------------------
# Settings, record and replay
# ---------------------------------------------------------------------------------------------

class MergeStore(SharedAcrossClones):
    """Merge plans of one sampling pass, keyed by ``(step, layer, frames)``.

    - ``step``: index of the current sigma in the pass's sigma schedule;
    - ``layer``: ``(block name, block number, transformer index)``, e.g. ``("input", 1, 0)``;
    - ``frames``: the absolute frame index (an int) for a frame's own (query) merge, or a
      tuple of absolute frame indices for a cross-frame key/value pool.

    In recording mode a plan is computed the first time a key is seen and reused afterwards
    (samplers that call the model several times per step, overlapping context windows), so a
    replay reproduces every merge exactly. Plans stay on the device they were made on.

    A store is shared across model clones (``ocd.shared``): the sampler that runs a clone
    records into the store the node returned. A recording pass empties it first.
    """

    def __init__(self):
        self.plans: dict[tuple, MergePlan] = {}
        self.sigmas: torch.Tensor | None = None  # the recorded pass's schedule, for pairing

    def __len__(self) -> int:
        return len(self.plans)

    def clear(self, sigmas: torch.Tensor | None = None) -> None:
        self.plans.clear()
        self.sigmas = None if sigmas is None else sigmas.detach().cpu().clone()

    def get(self, key: tuple) -> MergePlan | None:
        return self.plans.get(key)

    def put(self, key: tuple, plan: MergePlan) -> None:
        self.plans[key] = plan

    def __repr__(self) -> str:
        return f"MergeStore({len(self.plans)} plans)"


BLOCK_NAMES = ("input", "middle", "output")

# How a video transformer merges (``TokenMergeSettings.dit_merge``): "tokens" merges the
# background's tokens before each merged block and unmerges after it (attention, cross-attention
# and FFN all run on fewer tokens); "keys_values" keeps every token and merges only the
# background's keys/values inside self-attention, after the positional encoding.
DIT_MERGE_MODES = ("tokens", "keys_values")


def parse_block_numbers(text: str, input_name: str = "dit_blocks") -> tuple[tuple[int, int | None], ...]:
    """"all", or block numbers and ranges such as "0-9,20-" -> ((first, last or None), ...).
    A range's end is included; an open end reaches the last block."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise OCDInputError(input_name, "is empty: write 'all' or block numbers and ranges such as '2-27' or '0,5-'")
    if items == ["all"]:
        return ((0, None),)
    ranges = []
    for item in items:
        first, dash, last = item.partition("-")
        if not first.strip().isdigit() or (last.strip() and not last.strip().isdigit()):
            raise OCDInputError(input_name, f"'{item}' is not a block number or range: write 'all' or e.g. "
                                "'2-27', '0,5-' (numbers from 0, ends included)")
        lo = int(first)
        hi = (int(last) if last.strip() else None) if dash else lo
        if hi is not None and hi < lo:
            raise OCDInputError(input_name, f"'{item}' ends before it starts")
        ranges.append((lo, hi))
    return tuple(ranges)


def parse_blocks(text: str, input_name: str = "blocks") -> tuple[str, ...]:
    """"input,middle,output" or single blocks such as "output.9" -> a tuple of block names."""
    items = tuple(t.strip() for t in str(text).split(",") if t.strip())
    if not items:
        raise OCDInputError(input_name, "is empty: list UNet parts such as 'input,middle,output' or 'output.9'")
    for item in items:
        name, _, number = item.partition(".")
        if name not in BLOCK_NAMES or (number and not number.isdigit()):
            raise OCDInputError(input_name, f"'{item}' is not a block: use input, middle, output, or "
                                "name.number such as output.9, separated by commas")
    return items


@dataclass(frozen=True, eq=False)
class TokenMergeSettings(SharedAcrossClones):
    """What OCD_TokenMerge configures (immutable; shared, never copied, by model clones).

    - ratio: share of each token set's tokens merged away (0 = off, at most 1 - 1/(sx*sy))
    - sx, sy: destination stride (one destination per sx x sy cell)
    - max_downsample: merge only in layers whose token grid is at most this much smaller than
      the latent (1 = highest resolution only, as tomesd's default)
    - blocks: UNet parts merged: names ("input", "middle", "output") or "name.number"
    - seed: destinations are drawn from (seed, absolute frame, step)
    - protection: foreground_protection in [0, 1]
    - protect_keys: whether protection also keeps the object's tokens out of the merges of the
      cross-frame key/value pool (OCD's rule applied literally). Off (default), the pool is
      merged by similarity, never across the object's boundary: keys are read by every query,
      and forcing all pool merges into the background averages poorly matched background keys,
      which changes what the object's queries read too (docs/attention.md, measured)
    - foreground_mask: ``[M, H, W]`` in [0, 1] (M = 1 or one per frame) or None; tokens are
      weighted by the pack's one mask-to-grid rule (``ocd.masks.grid``)
    - pairing: "off", "record" or "replay"; store: the MergeStore for record/replay
    - node: the graph node the settings came from (its part of the run report)
    """

    ratio: float = 0.5
    sx: int = 2
    sy: int = 2
    max_downsample: int = 1
    blocks: tuple[str, ...] = ("input", "middle", "output")
    seed: int = 0
    protection: float = 1.0
    protect_keys: bool = False
    foreground_mask: torch.Tensor | None = None
    pairing: str = "off"
    store: MergeStore | None = None
    node: object = None
    # video transformers (DiTs): which blocks merge, and how (DIT_MERGE_MODES)
    dit_blocks: tuple[tuple[int, int | None], ...] = ((0, None),)
    dit_merge: str = "tokens"
    transformer: bool = False  # set on a video transformer's clone: the report shows its settings

    def summary(self) -> dict:
        """The settings as the run report shows them."""
        if self.transformer:
            return self.transformer_summary()
        return {"feature": "token_merge", "merge_ratio": self.ratio, "stride": [self.sx, self.sy],
                "max_downsample": self.max_downsample, "blocks": ",".join(self.blocks),
                "foreground_protection": self.protection if self.foreground_mask is not None else 0.0,
                "mask": self.foreground_mask is not None, "pairing": self.pairing}

    def transformer_summary(self) -> dict:
        """The settings as the run report shows them for a video transformer."""
        blocks = ",".join(f"{lo}" if hi == lo else f"{lo}-{'' if hi is None else hi}" for lo, hi in self.dit_blocks)
        return {"feature": "token_merge", "merge_ratio": self.ratio, "stride": [self.sx, self.sy],
                "dit_blocks": "all" if self.dit_blocks == ((0, None),) else blocks, "dit_merge": self.dit_merge,
                "foreground_protection": self.protection if self.foreground_mask is not None else 0.0,
                "mask": self.foreground_mask is not None, "pairing": self.pairing}

    def merges_block(self, number: int) -> bool:
        """Whether a video transformer's block ``number`` merges."""
        return self.ratio > 0 and any(lo <= number and (hi is None or number <= hi) for lo, hi in self.dit_blocks)

    def missing_blocks(self, count: int) -> list[str]:
        """The parts of ``dit_blocks`` a network of ``count`` blocks does not have."""
        return [f"{lo}" if hi == lo else f"{lo}-{'' if hi is None else hi}" for lo, hi in self.dit_blocks
                if lo >= count or (hi is not None and hi >= count)]

    def warnings(self) -> list[str]:
        """What the settings cannot do as asked (the run report says it once per run)."""
        found = []
        if self.foreground_mask is not None and self.protection > 0 and self.ratio > 0:
            if float(self.foreground_mask.amax()) <= 0.0:
                found.append("the mask is empty: nothing to protect, merging is plain token merging")
            elif float(self.foreground_mask.amin()) >= 0.5:
                found.append("the mask covers every token: nothing is background, protection has no effect")
        elif self.foreground_mask is None and self.protection > 0 and self.ratio > 0:
            found.append("no mask is connected: foreground_protection has nothing to protect (plain token "
                         "merging); connect the object's mask")
        return found

    def validate(self) -> "TokenMergeSettings":
        max_ratio = 1.0 - 1.0 / (self.sx * self.sy)
        if not 0.0 <= self.ratio <= max_ratio + 1e-9:
            raise OCDInputError("merge_ratio", f"{self.ratio} is outside [0, {max_ratio:.3g}]: with a "
                                f"{self.sx}x{self.sy} stride at most that share of tokens are sources")
        if self.sx < 1 or self.sy < 1 or self.sx * self.sy < 2:
            raise OCDInputError("stride", f"{self.sx}x{self.sy}: one destination per cell needs a cell of at least 2 tokens")
        if not 0.0 <= self.protection <= 1.0:
            raise OCDInputError("foreground_protection", f"{self.protection} is outside [0, 1]")
        if self.pairing not in PAIRING_MODES:
            raise OCDInputError("pairing", f"'{self.pairing}' is not one of {PAIRING_MODES}")
        if self.pairing != "off" and self.store is None:
            raise OCDInputError("merge_record", f"pairing '{self.pairing}' needs a merge record")
        if self.dit_merge not in DIT_MERGE_MODES:
            raise OCDInputError("dit_merge", f"'{self.dit_merge}' is not one of {DIT_MERGE_MODES}")
        if self.foreground_mask is not None and self.foreground_mask.ndim != 3:
            raise OCDInputError("mask", f"expected [frames, height, width], got shape {tuple(self.foreground_mask.shape)}")
        return self

    def applies_to(self, block: tuple | None, downsample: int) -> bool:
        """Whether the layer in ``block`` (("input", 4), ...) at this downsampling is merged."""
        if self.ratio <= 0 or downsample > self.max_downsample:
            return False
        if block is None:
            return True
        name, number = block[0], block[1]
        return name in self.blocks or f"{name}.{number}" in self.blocks

    def foreground(self, frames: Sequence[int], h: int, w: int, device) -> torch.Tensor | None:
        """Foreground weights ``[len(frames), h * w]`` for absolute frame indices, or None."""
        if self.foreground_mask is None or self.protection <= 0:
            return None
        return grid.token_weights(self.foreground_mask, frames, h, w, device)


def plan_token_sets(
    metric: torch.Tensor,
    token_sets: Sequence[Sequence[int]],
    keys: Sequence[Hashable],
    grid: tuple[int, int],
    step: int,
    settings: TokenMergeSettings,
    protect_sources: bool = True,
    frame_weights=None,
) -> MergePlan:
    """Merge plans for B token sets, each the tokens of one or more frames.

    Args:
     - metric [B, P * h * w, C]: row b holds the tokens of frames ``token_sets[b]`` (P
       absolute frame indices each, concatenated in that order)
     - keys: one store key per row (used in record/replay)
     - grid: (h, w) token grid of one frame; step: the sampling step
     - protect_sources: see ``bipartite_soft_matching`` (False for key/value pools unless
       ``settings.protect_keys``)
     - frame_weights(frames, h, w, device) -> ``[len(frames), h * w]``: the object weights of
       the frames' tokens; default ``settings.foreground`` (frames of the video itself; a video
       latent's frames hold several video frames and pass their own)
    Destinations of each frame follow (seed, frame, step), the same in every token set that
    holds the frame. In replay mode the plans come from the store, nothing is computed.
    """
    B = metric.shape[0]
    h, w = grid
    store = settings.store if settings.pairing != "off" else None

    if settings.pairing == "replay":
        rows = []
        for key in keys:
            plan = store.get(key)
            if plan is None:
                raise OCDInputError("merge_record", f"no recorded merge for {key} (step, layer, frames): "
                                    "the replaying sampler must run after the recording one, with the "
                                    "same steps, size and frames")
            if plan.num_tokens != metric.shape[1]:
                raise OCDInputError("merge_record", f"recorded merge for {key} has {plan.num_tokens} "
                                    f"tokens, this pass has {metric.shape[1]}")
            rows.append(plan)
        return MergePlan.stack([MergePlan(p.slot.to(metric.device), p.size,
                                          None if p.representative is None else p.representative.to(metric.device))
                                for p in rows])

    cached = [store.get(k) for k in keys] if store is not None else [None] * B
    if all(p is not None for p in cached):
        return MergePlan.stack(cached)

    frame_mask: dict[int, torch.Tensor] = {}
    for frames in token_sets:
        for f in frames:
            if f not in frame_mask:
                choice = draw_destination_choice(h, w, settings.sx, settings.sy, frame_generator(settings.seed, f, step))
                frame_mask[f] = destination_mask(h, w, settings.sx, settings.sy, choice)
    is_dst = torch.stack([torch.cat([frame_mask[f] for f in frames]) for frames in token_sets]).to(metric.device)

    foreground = None
    all_frames = sorted(frame_mask)
    weights = None
    if settings.foreground_mask is not None and settings.protection > 0:
        weights = (frame_weights or settings.foreground)(all_frames, h, w, metric.device)
    if weights is not None:
        row_of = {f: i for i, f in enumerate(all_frames)}
        foreground = torch.stack([torch.cat([weights[row_of[f]] for f in frames]) for frames in token_sets])

    r = int(metric.shape[1] * settings.ratio)
    plan = bipartite_soft_matching(metric, is_dst, r, foreground, settings.protection, protect_sources)
    if store is None:
        return plan
    rows = []
    for b, key in enumerate(keys):
        if cached[b] is None:
            store.put(key, plan.row(b))
            rows.append(plan.row(b))
        else:
            rows.append(cached[b])
    return MergePlan.stack(rows)
