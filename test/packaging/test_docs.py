"""The documentation kept equal to the code: every parameter in docs/parameters.md with the
schema's default, range and run-time rule; the README short."""

import re
from pathlib import Path

from depthclip_ros.config.parameters import parameter_fields
from depthclip_ros.config.schema import constraints_text

ROOT = Path(__file__).resolve().parents[2]


def doc_value(value) -> str:
    """A default as the docs write it (YAML's spelling)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(doc_value(v) for v in value) + "]"
    if value == "":
        return '""'
    return str(value)


def schema_row(field) -> tuple:
    return (
        doc_value(field.default),
        constraints_text(field) or "-",
        "read-only" if field.metadata["read_only"] else "yes",
    )


def documented_rows() -> dict:
    """{name: (default, range, run time)} of the table in docs/parameters.md."""
    rows = {}
    for line in (ROOT / "docs" / "parameters.md").read_text().splitlines():
        m = re.match(r"^\| `([a-z_]+)` \| (.*?) \| (.*?) \| (.*?) \| .* \|$", line)
        if m:
            rows[m.group(1)] = (m.group(2).strip("`"), m.group(3), m.group(4))
    return rows


def test_every_parameter_is_documented_as_the_schema_has_it():
    documented = documented_rows()
    schema = {field.name: schema_row(field) for _, field in parameter_fields()}
    assert set(documented) == set(schema)  # none missing, none that does not exist
    for name, row in schema.items():
        assert documented[name] == row, name


def test_the_readme_is_short_and_links_every_doc():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for doc in sorted((ROOT / "docs").glob("*.md")):
        assert f"(docs/{doc.name})" in readme, doc.name
