"""Settings a flow reads from its environment first, then from a Prefect Secret block.

A flow's pod gets only what its deployment's ``job_variables.env`` gives it; the Secret blocks that
``greenlight setup`` creates from the operator's environment carry the rest. Values are handed to
their user and to the redaction of quoted logs, never printed.
"""

from __future__ import annotations

from typing import Any

from prefect.blocks.system import Secret


def read_secret_block(name: str) -> Any | None:
    """The value of the Prefect Secret block ``name`` (a string, or the JSON it holds); None when
    no such block exists. Errors reaching the Prefect API propagate."""
    try:
        block = Secret.load(name)
    except ValueError:  # Prefect: "Unable to find block document named ..."
        return None
    return block.get()  # type: ignore[union-attr]  # sync context: not a coroutine
