"""docs/profile-reference.md is what the profile models render, and names every field with a description."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from greenlight.commands.reference import _models, profile_reference
from greenlight.settings import REPO_ROOT, Profile

DOC = REPO_ROOT / "docs" / "profile-reference.md"


def fields(model: type[BaseModel], prefix: str = "") -> dict[str, Any]:
    """path -> FieldInfo of every field of ``model`` and the models it nests (``apps[].name``)."""
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        out[path] = field
        for sub, listed in _models(field.annotation):
            out |= fields(sub, f"{path}{'[]' if listed else ''}.")
    return out


def test_committed_reference_is_what_the_models_render() -> None:
    """The file in docs/ is the generator's output today (regenerate:
    uv run python -m greenlight.commands.reference, or greenlight profile reference > docs/profile-reference.md)."""
    assert DOC.read_text() == profile_reference(), (
        "docs/profile-reference.md is stale: run `uv run python -m greenlight.commands.reference`"
    )


def test_every_field_has_a_description_and_a_row() -> None:
    """Each field of Profile and the models it nests carries a description, and the reference has its row."""
    text = profile_reference()
    every = fields(Profile)
    assert len(every) > 80
    missing = [p for p, f in every.items() if not f.description]
    assert missing == []
    for path in every:
        assert f"| `{path}` |" in text, path


def test_rows_show_type_default_and_limits() -> None:
    """A few rows as a reader needs them: type, default, limits."""
    text = profile_reference()
    assert "| `gate.max_error_rate` | number | `0.05` | ≥ 0, ≤ 1 |" in text
    assert "| `apps[].port` | integer | `8080` | ≥ 1, ≤ 65535 |" in text
    assert '| `release.switch_mode` | one of `auto`, `direct`, `overlap` | `"auto"` | — |' in text
    assert (
        "| `release.approval.people[].slack` | string or null | `null` | matches `^[UW][A-Z0-9]{8,20}$` |"
        in text
    )
    assert (
        '| `gate.latency` | list of [LatencyLimit](#gatelatency) | `[{"percentile": 95, "max_ms": 1000.0}]` |'
        in text
    )
    assert "| `monitoring.project` | string | **required** |" in text
