"""docs/config.md is generated from the schema and must be current; every key is described."""

from trainyard.config_doc import DOC, render
from trainyard.spec import field_paths


def test_config_doc_is_current():
    assert DOC.read_text(encoding="utf-8") == render(), "docs/config.md is stale: run python -m trainyard.config_doc"


def test_every_schema_key_has_a_description():
    missing = [k for k, info in field_paths().items() if not info.description]
    assert not missing, f"add Field(description=...) for {missing}"


def test_the_readme_links_the_reference():
    assert "docs/config.md" in (DOC.parents[1] / "README.md").read_text(encoding="utf-8")
