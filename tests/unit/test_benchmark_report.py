"""The docs/BENCHMARKS.md section writer keeps other sections intact."""
from scripts.benchmarks.report import markdown_table, write_section


def test_sections_are_replaced_independently(tmp_path):
    doc = tmp_path / "B.md"
    write_section("a", "first a", doc)
    write_section("b", "first b", doc)
    write_section("a", "second a", doc)
    text = doc.read_text()
    assert "second a" in text and "first a" not in text and "first b" in text
    assert text.index("second a") < text.index("first b")  # a keeps its place
    assert not (tmp_path / "B.md.partial").exists()


def test_markdown_table():
    assert markdown_table(["x", "y"], [[1, 0.12345]]) == "| x | y |\n|---|---|\n| 1 | 0.123 |"
