"""OCD_CrossAttentionMask on the mini SD1.5 checkpoint (real CLIP tokenizer, random weights)."""
from __future__ import annotations

import pytest
import torch

from ocd.inversion import comfy_passes
from ocd.inversion import record as record_module

PROMPT = "a photo of a red car on a road"


@pytest.fixture(scope="module")
def inverted(mini_sd15):
    model, clip, _ = mini_sd15
    with torch.inference_mode():
        cond = clip.encode_from_tokens_scheduled(clip.tokenize(PROMPT))
        latent = torch.randn(2, 4, 4, 6, generator=torch.Generator().manual_seed(1)) / 0.18215
        return comfy_passes.invert(model, latent, cond, solver="ddim", steps=3, record_cross_attention=True)


def test_recording_cross_attention_changes_nothing(mini_sd15, inverted, inference):
    model, clip, _ = mini_sd15
    cond = clip.encode_from_tokens_scheduled(clip.tokenize(PROMPT))
    out, record = inverted
    plain, _ = comfy_passes.invert(model, record.source_latent, cond, solver="ddim", steps=3)
    assert torch.equal(out, plain)
    cross = record.extras[record_module.CROSS_ATTENTION]
    assert {step for step, _ in cross.maps} == {0, 1, 2}  # the editing steps the inversion steps mirror
    p = next(iter(cross.maps.values()))
    assert p.shape[0] == 2 and p.shape[2] == 77  # frames, text tokens
    torch.testing.assert_close(p.float().sum(-1), torch.ones(p.shape[:2]), atol=3e-3, rtol=0)


def test_mask_node(run, ocd_nodes, mini_sd15, inverted, inference):
    _, clip, _ = mini_sd15
    _, record = inverted
    node = ocd_nodes["OCD_CrossAttentionMask"]
    (mask,) = run(node, inversion=record, clip=clip, source_prompt=PROMPT, words="red car", threshold=0.5,
                  dilation=0).result
    assert mask.shape == (2, 32, 48) and set(mask.unique().tolist()) == {0.0, 1.0}
    with pytest.raises(ValueError, match="input 'words'"):
        run(node, inversion=record, clip=clip, source_prompt=PROMPT, words="bicycle", threshold=0.5, dilation=0)
    with pytest.raises(ValueError, match="input 'words'"):
        run(node, inversion=record, clip=clip, source_prompt=PROMPT, words=" , ", threshold=0.5, dilation=0)


def test_word_positions_with_the_real_tokenizer(mini_sd15, run, ocd_nodes):
    from nodes import CLIPTextEncode  # noqa: F401  (ComfyUI's, to be sure the host is loaded)

    _, clip, _ = mini_sd15
    ids = [t[0] for t in clip.tokenize(PROMPT)["l"][0]]
    car = [t[0] for t in clip.tokenize("car")["l"][0]][1]
    # "a photo of a red car on a road": start token, then a=1 photo=2 of=3 a=4 red=5 car=6
    assert ids[6] == car


def test_an_empty_record_names_max_record_tokens(run, ocd_nodes, mini_sd15, inference):
    """Recording on, but max_record_tokens below every layer's query count: the record exists
    and is empty. The mask node names max_record_tokens and its value (not record_cross_attention,
    which was on); Invert Latents' run report warns."""
    from ocd.report import RunReport

    model, clip, _ = mini_sd15
    cond = clip.encode_from_tokens_scheduled(clip.tokenize(PROMPT))
    latent = torch.randn(1, 4, 4, 6, generator=torch.Generator().manual_seed(2)) / 0.18215
    report = RunReport()
    _, record = comfy_passes.invert(model, latent, cond, solver="ddim", steps=2, record_cross_attention=True,
                                    max_record_tokens=1, report=report)
    assert record.extras[record_module.CROSS_ATTENTION].maps == {}
    assert any("recorded no cross-attention" in w and "1 queries (max_record_tokens)" in w for w in report.warnings), \
        report.warnings
    node = ocd_nodes["OCD_CrossAttentionMask"]
    with pytest.raises(ValueError, match=r"input 'inversion': its cross-attention record is empty: .*at most "
                       r"max_record_tokens = 1 queries.*raise max_record_tokens on Invert Latents \(OCD\)") as e:
        run(node, inversion=record, clip=clip, source_prompt=PROMPT, words="red car", threshold=0.5, dilation=0)
    assert "record_cross_attention" not in str(e.value)
    # recording off: the message asks to turn it on
    _, plain = comfy_passes.invert(model, latent, cond, solver="ddim", steps=2, max_record_tokens=1)
    with pytest.raises(ValueError, match=r"input 'inversion': has no cross-attention record: set "
                       r"record_cross_attention on"):
        run(node, inversion=plain, clip=clip, source_prompt=PROMPT, words="red car", threshold=0.5, dilation=0)
    # a record the limit does not empty: no warning
    report = RunReport()
    comfy_passes.invert(model, latent, cond, solver="ddim", steps=2, record_cross_attention=True, report=report)
    assert not any("cross-attention" in w for w in report.warnings), report.warnings
