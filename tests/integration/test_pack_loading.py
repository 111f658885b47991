"""The pack as ComfyUI loads it: registration, ids, categories, tooltips."""
from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_every_node_is_registered_with_an_ocd_id(ocd_nodes):
    assert {"OCD_LoadVideo", "OCD_SaveVideo"} <= set(ocd_nodes)
    assert all(node_id.startswith("OCD_") for node_id in ocd_nodes)


def test_categories_and_tooltips(ocd_nodes):
    for node_id, cls in ocd_nodes.items():
        schema = cls.GET_SCHEMA()
        assert schema.category.startswith("OCD/"), node_id
        assert schema.display_name and schema.description, node_id
        for inp in schema.inputs:
            assert inp.tooltip, f"{node_id}.{inp.id} has no tooltip"


def test_node_ids_are_string_literals_in_the_source():
    """ComfyUI-Manager finds node ids by scanning the source for literals."""
    literals = set()
    for path in (REPO_ROOT / "nodes").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "node_id":
                assert isinstance(node.value, ast.Constant), f"{path.name}: node_id is not a literal"
                literals.add(node.value.value)
    assert {"OCD_LoadVideo", "OCD_SaveVideo"} <= literals


def test_object_info_lists_the_upload_widget(ocd_nodes):
    info = ocd_nodes["OCD_LoadVideo"].INPUT_TYPES()
    options = info["required"]["video"][1]
    assert options.get("video_upload") is True
    assert "bikes.mp4" in info["required"]["video"][1]["options"]


def test_web_directory_is_registered(ocd_nodes):
    import nodes

    web_dirs = {Path(p).resolve() for p in nodes.EXTENSION_WEB_DIRS.values()}
    assert (REPO_ROOT / "web").resolve() in web_dirs
