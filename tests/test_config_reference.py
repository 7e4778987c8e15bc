"""The config reference: every config field is described, and docs/config.md is what
scripts/config_reference.py writes from the registered models now."""

from __future__ import annotations

import importlib.util
import re
import sys
from typing import get_args

import pytest
from pydantic import BaseModel, ConfigDict, Field

from oa_core import hookimpl
from oa_core.config import config_model
from oa_core.plugins import Provider, add_plugin, get_registry, remove_plugin


@pytest.fixture(scope="module")
def reference(repo_root):
    path = repo_root / "scripts" / "config_reference.py"
    spec = importlib.util.spec_from_file_location("config_reference", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def models(annotation, found: dict[type[BaseModel], None]) -> dict[type[BaseModel], None]:
    """Every pydantic model in ``annotation`` and, recursively, in its models' fields."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation not in found:
            found[annotation] = None
            for info in annotation.model_fields.values():
                models(info.annotation, found)
    for arg in get_args(annotation):
        models(arg, found)
    return found


def test_every_config_field_has_a_description():
    run_config = config_model(get_registry())
    found = models(run_config, {})
    names = {m.__name__ for m in found}
    assert {"ModelSettings", "DatasetSpec", "DataSettings", "PoseSettings", "SFTConfig", "GenerationEval",
            "PeftSettings", "FreezeSettings", "NewTokenSettings", "NewToken", "KernelsSettings"} <= names
    fields = [(m.__name__, name, info) for m in found for name, info in m.model_fields.items()]
    assert len(fields) >= 130
    missing = [f"{model}.{name}" for model, name, info in fields if not (info.description or "").strip()]
    assert not missing, f"fields without a description: {', '.join(missing)}"


def test_docs_config_md_is_generated_from_the_models(reference, repo_root):
    text = reference.render(get_registry())
    assert (repo_root / "docs" / "config.md").read_text(encoding="utf-8") == text, (
        "docs/config.md is stale: run .venv/bin/python scripts/config_reference.py")
    # every field of every model is a row with its description (RunConfig's: the top-level table)
    for model in models(config_model(get_registry()), {}):
        for name, info in model.model_fields.items():
            assert f"| `{name}` |" in text, f"{model.__name__}.{name}"
            if name != "train":
                assert " ".join(info.description.split()).replace("|", "\\|") in text, f"{model.__name__}.{name}"


def test_links_to_the_reference_name_its_headings(reference, repo_root):
    text = (repo_root / "docs" / "config.md").read_text(encoding="utf-8")
    headings = re.findall(r"^#+ (.+)$", text, flags=re.M)
    anchors = {reference.slug(h) for h in headings}
    assert len(anchors) == len(headings)  # GitHub would number repeated ones
    assert {"model", "data", "datapose", "kernels", "datasets-eval_datasets"} <= anchors
    links = re.findall(r"\]\(#([^)]+)\)", text)
    readmes = [repo_root / "README.md", *repo_root.glob("packages/*/README.md"), *repo_root.glob("plugins/*/README.md")]
    for readme in readmes:
        links += re.findall(r"docs/config\.md#([^)]+)\)", readme.read_text(encoding="utf-8"))
    assert len(links) > 10 and set(links) <= anchors, set(links) - anchors


def test_check_reports_a_stale_file(reference, tmp_path, monkeypatch, capsys):
    out = tmp_path / "config.md"
    monkeypatch.setattr(reference, "OUT", out)
    monkeypatch.setattr(reference, "ROOT", tmp_path)
    assert reference.main(["--check"]) == 1  # missing
    assert reference.main([]) == 0 and reference.main(["--check"]) == 0
    out.write_text(out.read_text() + "edited by hand\n")
    assert reference.main(["--check"]) == 1
    assert "config.md is stale" in capsys.readouterr().err


class ThirdPartyOptions(BaseModel):
    """Options of a plugin from outside the repository."""

    model_config = ConfigDict(extra="forbid")
    level: int = Field(1, description="how much")


class ThirdParty:
    @hookimpl
    def register_config_sections(self, register):
        register("third_party", ThirdPartyOptions)


def test_only_this_repositorys_packages_are_documented(reference):
    add_plugin(ThirdParty(), "third_party", Provider("third_party", "someone-elses-plugin", "1.0"))
    try:
        registry = get_registry()
        assert "third_party" in registry.names("config_section")
        text = reference.render(registry)
        assert "third_party" not in text and "someone-elses-plugin" not in text
        assert "## `third_party`" in reference.render(registry, reference.repo_distributions()
                                                       | {"someone-elses-plugin": True})
    finally:
        remove_plugin("third_party")
