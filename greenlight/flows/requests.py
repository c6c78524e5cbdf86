"""What a person (the Prefect UI's Run form, the CLI) or a trigger asks a release flow for."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, Field, field_validator

from greenlight.settings import Environment


class PromoteRequest(BaseModel):
    """Promote the images of a commit to an environment (the form the Prefect UI shows)."""

    environment: Environment = Field(
        description="where to release (one of the profiles); production waits for approval"
    )
    commit: str = Field(description="the commit whose images to release (images are tagged with it)")
    actor: str | None = Field(None, description="who asks (GitHub actor or person); default: the login name")
    force_reason: str | None = Field(
        None, description="release despite a freeze or a failing live colour; goes on the record"
    )
    bake_s: float | None = Field(None, ge=0, description="override the profile's bake time")
    commit_at: AwareDatetime | None = Field(
        None,
        description="when the commit was made (set by the GitHub receiver from the signed payload; "
        "goes on the release record for the lead-time figure)",
    )
    commit_proof: str | None = Field(
        None,
        description="set by the GitHub receiver: its signature over the repository, commit, commit_at and "
        "workflow run it verified; without one that verifies, commit_at is recorded as typed and not "
        "counted in the lead time",
    )

    @field_validator("commit_at", "commit_proof", mode="before")
    @classmethod
    def _absent(cls, value: object) -> object:
        # a trigger renders a null or missing payload field as "None" or "": both mean absent
        return None if value in ("", "None") else value


class DeployRequest(BaseModel):
    """Release explicit images (tags are resolved to digests first)."""

    environment: Environment = Field(
        description="where to release (one of the profiles); production waits for approval"
    )
    images: list[str] = Field(
        min_length=1, description="one image per app, e.g. ghcr.io/org/backend:abc123 or ...@sha256:..."
    )
    actor: str | None = Field(None, description="who asks (GitHub actor or person); default: the login name")
    force_reason: str | None = Field(
        None, description="release despite a freeze or a failing live colour; goes on the record"
    )
    bake_s: float | None = Field(None, ge=0, description="override the profile's bake time")
