"""The forms a person fills in the Prefect UI: every deployment of prefect.yaml has a name of its
own, every parameter a description, and the environment is a choice among the profiles."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
import yaml
from prefect.utilities.callables import parameter_schema

from greenlight.settings import REPO_ROOT

DEPLOYMENTS = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())["deployments"]
ENTRYPOINTS = sorted({d["entrypoint"] for d in DEPLOYMENTS})


def flow_of(entrypoint: str) -> Any:
    module, name = entrypoint.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def fields(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every field a form shows: the parameters, and the fields of the request models they take."""
    out = dict(schema["properties"])
    for name, definition in (schema.get("definitions") or {}).items():
        if name.endswith("Request"):
            out.update({f"{name}.{k}": v for k, v in definition["properties"].items()})
    return out


def test_deployment_names_say_what_they_do() -> None:
    """No two deployments share a name (three were all called `by-hand`)."""
    names = [d["name"] for d in DEPLOYMENTS]
    assert len(names) == len(set(names)), names


@pytest.mark.parametrize("entrypoint", ENTRYPOINTS)
def test_every_field_has_a_description_and_environments_are_a_choice(entrypoint: str) -> None:
    schema = parameter_schema(flow_of(entrypoint)).model_dump()
    shown = fields(schema)
    assert shown, entrypoint
    undescribed = [name for name, f in shown.items() if not f.get("description")]
    assert not undescribed, f"{entrypoint}: no description for {undescribed}"
    environments = [f for name, f in shown.items() if name.split(".")[-1] == "environment"]
    assert environments, f"{entrypoint} takes no environment"
    for f in environments:
        assert set(f.get("enum") or []) == {"dr", "production", "staging"}, f
