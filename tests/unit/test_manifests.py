"""Bootstrap manifests render one colour's Deployment and the live and preview Services."""

from __future__ import annotations

import pytest

from greenlight.core.manifests import AppShape, render_bootstrap
from greenlight.errors import InputInvalid
from greenlight.settings import APP_TEMPLATE

TEMPLATE = APP_TEMPLATE.read_text()
SHAPE = AppShape(
    "backend", "sma-staging", "backend", "backend-preview", "backend", 8080, "/healthz", 2, "color", 60
)
IMAGE = "ghcr.io/sma-platform/backend@sha256:" + "a" * 64


def test_live_selects_colour_and_preview_selects_the_other() -> None:
    """The live Service selects the deployed colour, the preview Service the inactive one."""
    docs = {
        (d["kind"], d["metadata"]["name"]): d
        for d in render_bootstrap(TEMPLATE, SHAPE, "blue", "green", IMAGE)
    }
    dep = docs[("Deployment", "backend-blue")]
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE
    assert dep["spec"]["selector"]["matchLabels"] == {"app": "backend", "color": "blue"}
    assert dep["spec"]["template"]["metadata"]["labels"] == {"app": "backend", "color": "blue"}
    assert dep["spec"]["replicas"] == 2
    assert docs[("Service", "backend")]["spec"]["selector"] == {"app": "backend", "color": "blue"}
    assert docs[("Service", "backend-preview")]["spec"]["selector"] == {"app": "backend", "color": "green"}


@pytest.mark.parametrize(
    ("template", "what"),
    [("metadata: {name: $nope}", "placeholder"), ("kind: Deployment\n", "one Deployment and two Services")],
)
def test_broken_template_is_refused(template: str, what: str) -> None:
    """A template with an unknown placeholder or the wrong objects is refused with the reason."""
    with pytest.raises(InputInvalid, match=what):
        render_bootstrap(template, SHAPE, "blue", "green", IMAGE)
