"""The random-weight Wan models (tests/support/random_wan.py) as ComfyUI's own loaders see them:
detected as the right Wan, sampled by core KSampler, decoded by a random Wan 2.1 VAE; and the
test-only text conditioning node."""
from __future__ import annotations

import math

import pytest
import torch

from tests.support import random_wan as rw

FRAMES, SIZE = 9, 64  # a 9-frame 64x64 clip: latent [1, 16, 3, 8, 8], 3 x 4 x 4 = 48 tokens


@pytest.fixture(scope="module")
def loaders_dir(comfy, wan21_small_model_file, wan21_vae_file):
    """The session's Wan files under the in-process base directory, for UNETLoader / VAELoader."""
    import folder_paths

    base = comfy.base_directory
    for folder, src in (("diffusion_models", wan21_small_model_file), ("vae", wan21_vae_file)):
        (base / "models" / folder).mkdir(parents=True, exist_ok=True)
        link = base / "models" / folder / src.name
        if not link.exists():
            link.symlink_to(src)
        assert src.name in folder_paths.get_filename_list(folder)
    return base


@pytest.fixture(scope="module")
def wan_vae(loaders_dir):
    import nodes

    from tests.conftest import WAN21_VAE_FILE

    return nodes.VAELoader().load_vae(WAN21_VAE_FILE)[0]


def empty_latent(run, length=FRAMES, size=SIZE):
    from comfy_extras.nodes_hunyuan import EmptyHunyuanLatentVideo

    return run(EmptyHunyuanLatentVideo, width=size, height=size, length=length, batch_size=1).result[0]


def sample(model, latent, seed=0, cfg=1.0, steps=3, positive="a red ball rolls across the grass",
           negative="blurry, static"):
    import nodes

    pos, neg = rw.text_conditioning(positive), rw.text_conditioning(negative)
    return nodes.KSampler().sample(model, seed, steps, cfg, "euler", "simple", pos, neg, latent)[0]["samples"]


def test_configs_have_wan_head_size_and_ffn_ratio(comfy):
    small = rw.WAN21_SMALL
    assert (small["dim"], small["num_heads"], small["ffn_dim"], small["num_layers"]) == (384, 3, 2240, 2)
    assert small["dim"] // small["num_heads"] == 128 and small["ffn_dim"] * 6 == small["dim"] * 35
    assert (small["in_dim"], small["out_dim"], small["text_dim"], small["freq_dim"]) == (16, 16, 4096, 256)
    wide = rw.WAN21_1_3B_WIDTH(30)
    assert (wide["dim"], wide["num_heads"], wide["ffn_dim"], wide["num_layers"]) == (1536, 12, 8960, 30)
    # the real depth: 1.42 B parameters (counted on the meta device; a regression value, not
    # checked against a real Wan 2.1 1.3B file, which cannot be downloaded here)
    assert rw.parameter_count(wide) == 1_418_996_800
    assert rw.parameter_count(small) == 8_725_568


def test_small_wan_is_detected_as_wan21_t2v(wan21_small, loaders_dir, comfy):
    import nodes
    from comfy.ldm.wan.model import WanModel

    from tests.conftest import WAN21_SMALL_FILE

    for model in (wan21_small, nodes.UNETLoader().load_unet(WAN21_SMALL_FILE, "default")[0]):
        config = model.model.model_config
        assert type(config).__name__ == "WAN21_T2V"
        assert type(config.latent_format).__name__ == "Wan21" and config.latent_format.latent_channels == 16
        for key in ("dim", "num_heads", "ffn_dim", "num_layers", "in_dim", "out_dim", "model_type"):
            assert config.unet_config[key] == rw.WAN21_SMALL[key], key
        network = model.model.diffusion_model
        assert type(network) is WanModel and network.text_dim == 4096
        assert network.blocks[0].self_attn.num_heads == 3 and network.blocks[0].self_attn.head_dim == 128
        assert network.blocks[0].ffn[0].out_features == 2240
        assert model.model.get_dtype() == torch.float32  # fp16 file, float32 on the CPU
        sd = network.state_dict()
        assert all(torch.isfinite(v).all() for v in sd.values())


def test_vace_and_wan22_5b_variants_are_detected_and_sample(tmp_path, comfy, inference):
    from comfy.ldm.wan.model import VaceWanModel

    vace = rw.load_wan(rw.write_wan_model(tmp_path / "vace.safetensors", rw.WAN21_VACE_SMALL, seed=2))
    config = vace.model.model_config
    assert type(config).__name__ == "WAN21_Vace"
    assert (config.unet_config["vace_in_dim"], config.unet_config["vace_layers"]) == (96, 1)
    assert type(vace.model.diffusion_model) is VaceWanModel
    # without WanVaceToVideo, ComfyUI feeds zero control frames and a full mask (32 + 64 channels)
    latent = {"samples": torch.zeros(1, 16, 3, 8, 8)}
    out = sample(vace, latent, steps=1)
    assert out.shape == (1, 16, 3, 8, 8) and torch.isfinite(out).all()

    ti2v = rw.load_wan(rw.write_wan_model(tmp_path / "ti2v.safetensors", rw.WAN22_5B_SMALL, seed=3))
    config = ti2v.model.model_config
    assert type(config).__name__ == "WAN22_T2V" and config.latent_format.latent_channels == 48
    assert (config.unet_config["in_dim"], config.unet_config["out_dim"]) == (48, 48)
    out = sample(ti2v, {"samples": torch.zeros(1, 48, 3, 4, 4)}, steps=1)  # 16x VAE: 64x64 -> 4x4
    assert out.shape == (1, 48, 3, 4, 4) and torch.isfinite(out).all()


def test_vae_round_trips_a_clip(wan_vae, inference):
    import nodes

    assert type(wan_vae.first_stage_model).__name__ == "WanVAE" and wan_vae.first_stage_model.dim == rw.WAN21_VAE_DIM
    t = torch.linspace(0, 1, FRAMES).view(-1, 1, 1, 1)
    y, x = torch.meshgrid(torch.linspace(0, 1, SIZE), torch.linspace(0, 1, SIZE), indexing="ij")
    clip = torch.stack([(x + t.squeeze(-1)) % 1, y.expand(FRAMES, -1, -1), (x * y).expand(FRAMES, -1, -1)], -1)
    assert clip.shape == (FRAMES, SIZE, SIZE, 3)
    latent = nodes.VAEEncode().encode(wan_vae, clip)[0]
    assert latent["samples"].shape == (1, 16, 3, 8, 8) and torch.isfinite(latent["samples"]).all()
    frames = nodes.VAEDecode().decode(wan_vae, latent)[0]
    assert frames.shape == (FRAMES, SIZE, SIZE, 3)
    assert torch.isfinite(frames).all() and 0 <= frames.min() and frames.max() <= 1 and frames.std() > 0.01


def test_ksampler_runs_the_small_wan_seeded(wan21_small, run, inference):
    latent = empty_latent(run)
    assert latent["samples"].shape == (1, 16, 3, 8, 8)
    outs = {}
    for cfg in (1.0, 3.0):
        outs[cfg] = sample(wan21_small, latent, seed=5, cfg=cfg)
        assert outs[cfg].shape == (1, 16, 3, 8, 8) and torch.isfinite(outs[cfg]).all()
        assert 0.1 < outs[cfg].std() < 10
    assert torch.equal(sample(wan21_small, latent, seed=5, cfg=3.0), outs[3.0])
    assert not torch.equal(sample(wan21_small, latent, seed=6, cfg=3.0), outs[3.0])
    assert not torch.allclose(outs[1.0], outs[3.0])  # the negative prompt counts at cfg 3


def test_weights_are_seeded(comfy):
    a, b, c = (rw.wan_state_dict(rw.WAN21_SMALL, seed) for seed in (0, 0, 1))
    assert set(a) == set(c) and all(torch.equal(a[k], b[k]) for k in a)
    drawn = [k for k in a if a[k].ndim >= 2]  # biases start at 0, norm scales at 1
    assert len(drawn) == 30 and not any(torch.equal(a[k], c[k]) for k in drawn)
    assert "head.modulation" in a and not any(k.startswith(("model.", "diffusion_model.")) for k in a)


def test_init_is_stable_and_every_input_matters(comfy, inference):
    """Over 12 blocks the hidden state grows gently, the output stays at unit scale, and the
    latent, the text, the timestep (smoothly) and the blocks all move it."""
    network = rw.build_wan_network(rw.wan_config(384, 12), seed=0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 3, 8, 8, generator=g)
    cat, dog = rw.text_embedding("a cat"), rw.text_embedding("a dog")
    hidden = []
    hooks = [b.register_forward_hook(lambda m, i, o: hidden.append(float(o.std()))) for b in network.blocks]
    out = network(x, torch.tensor([500.0]), cat)
    for h in hooks:
        h.remove()
    assert torch.isfinite(out).all() and 0.5 < out.std() < 2
    assert hidden[-1] < 3 * hidden[0]

    def change(other):
        return float((other - out).norm() / out.norm())

    assert change(network(x, torch.tensor([500.0]), dog)) > 0.1
    assert change(network(x.flip(-1), torch.tensor([500.0]), cat)) > 0.5
    assert 0.001 < change(network(x, torch.tensor([510.0]), cat)) < 0.05  # smooth in time
    assert change(network(x, torch.tensor([50.0]), cat)) > 0.2
    blocks, network.blocks = network.blocks, torch.nn.ModuleList()
    assert change(network(x, torch.tensor([500.0]), cat)) > 0.3
    network.blocks = blocks
    network.half().patch_embedding.float()  # fp16 as on a GPU (ComfyUI keeps this one float32)
    assert change(network(x.half(), torch.tensor([500.0]), cat.half()).float()) < 0.01


def test_text_conditioning_node_matches_the_helper(ocd_test_nodes, inference):
    import nodes

    assert set(ocd_test_nodes) == {"OCDTest_TextConditioning", "OCDTest_NonFinite"}
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS["OCDTest_TextConditioning"] == "Test Text Conditioning (OCD tests)"
    node = ocd_test_nodes["OCDTest_TextConditioning"]
    inputs = node.INPUT_TYPES()
    assert inputs["required"]["text"][1]["multiline"] and inputs["optional"]["tokens"][1]["default"] == 16
    for text, tokens in (("a red ball rolls across the grass", 16), ("", 16), ("ünïcödé\nline", 7)):
        (cond,) = node().encode(text, tokens)
        expected = rw.text_conditioning(text, tokens)
        assert len(cond) == 1 and cond[0][1] == {}
        assert cond[0][0].shape == (1, tokens, 4096) and torch.equal(cond[0][0], expected[0][0])
    a = rw.text_embedding("a cat")
    assert not torch.equal(a, rw.text_embedding("a dog")) and not torch.equal(a, rw.text_embedding("a cat", seed=1))
    assert math.isclose(float(a.std()), rw.TEXT_STD, rel_tol=0.05)
