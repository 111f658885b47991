"""ComfyUI nodes of the OCD pack: one module per family, each a thin layer over ocd/.

Every module in this package lists its node classes in ``NODES``; the extension below
collects them, so adding a family means adding one module.
"""
import importlib
import pkgutil

from comfy_api.latest import ComfyExtension, io


def _family_modules():
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"{__name__}.{info.name}")


class OCDExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [node for module in _family_modules() for node in module.NODES]
