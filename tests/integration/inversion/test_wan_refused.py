"""The inversion nodes given a Wan video transformer: refused by name, with what to use instead
(inversion on a flow-matching schedule is not built yet), before anything runs."""
from __future__ import annotations

import pytest
import torch

from tests.support import random_wan as rw


def test_invert_latents_refuses_a_video_transformer(ocd_nodes, run, wan21_small, inference):
    latent = {"samples": torch.zeros(1, 16, 3, 8, 8)}
    with pytest.raises(ValueError) as err:
        run(ocd_nodes["OCD_InvertLatents"], model=wan21_small, latent=latent, positive=rw.text_conditioning("a car"),
            solver="ddim", steps=4, scheduler="normal", cfg=1.0, inversion_depth=1.0, record_attention=0.0,
            max_record_tokens=1024, record_cross_attention=False, offload_record=False)
    message = str(err.value)
    assert "model" in message and "video transformer" in message and "Dual-Rate KSampler" in message
