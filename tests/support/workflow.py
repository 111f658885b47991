"""UI-format workflow JSON -> API format for the tests: the pack's own conversion
(``ocd.templates.ui_to_api``), the one the headless command runs the templates with."""
from __future__ import annotations

from ocd.templates import ui_to_api

__all__ = ["ui_to_api"]
