"""OCD: Object-Centric Diffusion for fast video editing, as a ComfyUI node pack.

ComfyUI imports this file from custom_nodes/ and calls ``comfy_entrypoint()`` (V3 API).
The method lives in ocd/ (plain PyTorch), the nodes in nodes/, the frontend in web/.
"""
from .nodes import OCDExtension

WEB_DIRECTORY = "./web"


async def comfy_entrypoint() -> OCDExtension:
    return OCDExtension()


__all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
