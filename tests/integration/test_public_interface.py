"""Saved workflows keep loading: the pack's node ids, inputs, types, options and output slots
are compared with the snapshot taken before the ocd/ restructure (tests/support/interface.py
says what may change: only additions at the end)."""
from __future__ import annotations

import copy

from tests.support import interface


def test_the_public_interface_is_the_snapshot_or_extends_it(ocd_nodes):
    problems = interface.compare(interface.load_snapshot(), interface.describe(ocd_nodes))
    assert not problems, "\n".join(problems)


def test_the_comparison_sees_each_kind_of_break(ocd_nodes):
    """The check itself: renaming, reordering, retyping and removing are each reported."""
    snapshot = interface.describe(ocd_nodes)
    assert interface.compare(snapshot, snapshot) == []

    def broken(edit):
        current = copy.deepcopy(snapshot)
        edit(current)
        return interface.compare(snapshot, current)

    assert broken(lambda c: c.pop("OCD_TokenMerge"))
    assert broken(lambda c: c["OCD_TokenMerge"]["inputs"][1].update(name="ratio"))
    assert broken(lambda c: c["OCD_TokenMerge"]["inputs"].reverse())
    assert broken(lambda c: c["OCD_TokenMerge"]["inputs"][1].update(type="INT"))
    assert broken(lambda c: c["OCD_TokenMerge"]["inputs"][1].update(default=0.25))
    assert broken(lambda c: c["OCD_CrossFrameAttention"]["inputs"][1]["options"].pop())
    assert broken(lambda c: c["OCD_TokenMerge"]["outputs"].pop(0))
    assert broken(lambda c: c["OCD_SaveVideo"]["inputs"].append({"name": "x", "section": "required", "type": "INT"}))
    # additions at the end keep saved workflows loading
    assert not broken(lambda c: c["OCD_SaveVideo"]["inputs"].append({"name": "x", "section": "optional", "type": "INT"}))
    assert not broken(lambda c: c["OCD_LoadVideo"]["outputs"].append({"name": "audio", "type": "AUDIO", "is_list": False}))
    assert not broken(lambda c: c["OCD_CrossFrameAttention"]["inputs"][1]["options"].append("new"))
