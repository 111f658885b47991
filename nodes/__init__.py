"""ComfyUI nodes of the OCD pack: one module per family, each a thin layer over ocd/."""
from comfy_api.latest import ComfyExtension, io

from . import video


class OCDExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [*video.NODES]
