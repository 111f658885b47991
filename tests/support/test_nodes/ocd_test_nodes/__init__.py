"""A test-only ComfyUI custom node pack (never shipped): stand-ins the OCD test suite needs
in a real ComfyUI server, where nothing can be downloaded.

- ``OCDTest_TextConditioning``: a CONDITIONING ``[[tensor [1, tokens, 4096], {}]]`` derived
  deterministically from the text, in place of umt5-xxl (Wan's text encoder: far too large to
  build with random weights; ComfyUI's Wan keeps a text width of 4096).

It is loaded from its own custom_nodes/ entry, apart from the pack, so it imports only torch,
hashlib and ComfyUI. tests/support/random_wan.py ``text_conditioning`` computes the same
tensor (tests/integration/test_random_wan.py checks that they agree).
- ``OCDTest_NonFinite``: a MASK, an IMAGE, a LATENT and a CONDITIONING of 0.5 holding NaN, +inf or -inf in a few pixels
  of every frame, what a broken upstream node or a division by zero in a mask graph makes
  (tests/e2e/test_input_sweep_links.py feeds them to every node that takes one).
"""
import hashlib

import torch

TEXT_DIM = 4096
TEXT_STD = 0.15


def text_embedding(text, tokens=16):
    """N(0, 0.15^2) of shape [1, tokens, 4096], seeded by the text's sha256 (63 bits)."""
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little") & ((1 << 63) - 1)
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((1, int(tokens), TEXT_DIM), generator=gen, dtype=torch.float32) * TEXT_STD


class OCDTestTextConditioning:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"text": ("STRING", {"multiline": True, "default": "a red ball rolls across the grass"})},
            "optional": {"tokens": ("INT", {"default": 16, "min": 1, "max": 512,
                                            "tooltip": "Number of text tokens of the conditioning."})},
        }

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    CATEGORY = "OCD tests"
    DESCRIPTION = ("Test only: a deterministic [1, tokens, 4096] text conditioning (a hash of the text "
                   "seeds it) standing in for umt5-xxl, for random-weight Wan models.")

    def encode(self, text, tokens=16):
        return ([[text_embedding(text, tokens), {}]],)


NON_FINITE = {"nan": float("nan"), "posinf": float("inf"), "neginf": float("-inf")}


class OCDTestNonFinite:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "value": (list(NON_FINITE), {"default": "nan"}),
                "frames": ("INT", {"default": 1, "min": 1, "max": 64}),
                "width": ("INT", {"default": 64, "min": 4, "max": 1024}),
                "height": ("INT", {"default": 64, "min": 4, "max": 1024}),
            },
        }

    RETURN_TYPES = ("MASK", "IMAGE", "LATENT", "CONDITIONING")
    RETURN_NAMES = ("mask", "image", "latent", "conditioning")
    FUNCTION = "make"
    CATEGORY = "OCD tests"
    DESCRIPTION = ("Test only: a MASK [frames, height, width], an IMAGE [frames, height, width, 3] and an SD "
                   "LATENT [frames, 4, height/8, width/8] of 0.5 with the chosen non-finite value in a 2x2 square "
                   "of every frame (the latent's first channel), and a [1, 4, 768] CONDITIONING with it in a 2x2 "
                   "square.")

    def make(self, value, frames=1, width=64, height=64):
        mask = torch.full((frames, height, width), 0.5)
        mask[:, 1:3, 1:3] = NON_FINITE[value]
        image = mask[..., None].expand(-1, -1, -1, 3).contiguous()
        latent = torch.full((frames, 4, max(2, height // 8), max(2, width // 8)), 0.5)
        latent[:, 0, :2, :2] = NON_FINITE[value]  # a 2x2 square of the first channel
        text = torch.full((1, 4, 768), 0.5)
        text[0, :2, :2] = NON_FINITE[value]  # an SD1.5-wide text conditioning with a 2x2 square
        return (mask, image, {"samples": latent}, [[text, {}]])


NODE_CLASS_MAPPINGS = {"OCDTest_TextConditioning": OCDTestTextConditioning, "OCDTest_NonFinite": OCDTestNonFinite}
NODE_DISPLAY_NAME_MAPPINGS = {"OCDTest_TextConditioning": "Test Text Conditioning (OCD tests)",
                              "OCDTest_NonFinite": "Test Non-Finite Mask and Image (OCD tests)"}
