"""Render an app's bootstrap manifests (greenlight/templates/app.yaml) for one colour. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from string import Template
from typing import Any

import yaml

from greenlight.errors import InputInvalid

ANNOTATION_PREFIX = "greenlight.dev/"
ACTIVE_COLOUR = ANNOTATION_PREFIX + "active-colour"
PREVIOUS_COLOUR = ANNOTATION_PREFIX + "previous-colour"
RELEASE_ID = ANNOTATION_PREFIX + "release-id"
DIGESTS = ANNOTATION_PREFIX + "digests"


@dataclass(frozen=True)
class AppShape:
    """The fields of a profile's app that the manifests need."""

    app: str
    namespace: str
    service: str
    preview_service: str
    container: str
    port: int
    health_path: str
    replicas: int
    colour_label: str
    progress_deadline_s: int
    prestop_s: int = 5  # the preStop sleep: longer than the data plane's propagation allowance


def render_bootstrap(
    template: str, shape: AppShape, colour: str, other_colour: str, image: str
) -> list[dict[str, Any]]:
    """The Deployment of ``colour`` and the live and preview Services, as dicts.

    The live Service selects ``colour``; the preview Service selects ``other_colour``.
    """
    values = {
        "app": shape.app,
        "namespace": shape.namespace,
        "service": shape.service,
        "preview_service": shape.preview_service,
        "container": shape.container,
        "port": str(shape.port),
        "health_path": shape.health_path,
        "replicas": str(shape.replicas),
        "colour_label": shape.colour_label,
        "colour": colour,
        "other_colour": other_colour,
        "image": image,
        "progress_deadline": str(shape.progress_deadline_s),
        "prestop_s": str(shape.prestop_s),
    }
    try:
        text = Template(template).substitute(values)
    except (KeyError, ValueError) as e:
        raise InputInvalid(f"bootstrap manifest template: unknown or malformed placeholder {e}") from e
    docs = [d for d in yaml.safe_load_all(text) if d]
    kinds = sorted(str(d.get("kind")) for d in docs)
    if kinds != ["Deployment", "Service", "Service"]:
        raise InputInvalid(
            f"bootstrap manifest template must hold one Deployment and two Services, not {kinds}"
        )
    return docs
