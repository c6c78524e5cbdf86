# The flows' image: what the `kubernetes` work pool runs for each flow run (prefect.kubernetes.yaml).
# Build it in your own CI, tagged with the commit, and push it to your registry:
#   docker build -t ghcr.io/<org>/greenlight-flows:<sha> . && docker push ghcr.io/<org>/greenlight-flows:<sha>
FROM python:3.11-slim-bookworm

# PostgreSQL client tools at least as new as the server that makes the dumps (pg_restore 15
# refuses PostgreSQL 18 dumps): from the PostgreSQL project's own Debian repository.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl gnupg \
 && install -d /usr/share/postgresql-common/pgdg \
 && curl -fsSL https://www.postgresql.org/media/keys/ACCC4CF8.asc -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc \
 && echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main" > /etc/apt/sources.list.d/pgdg.list \
 && apt-get update && apt-get install -y --no-install-recommends postgresql-client-18 \
 && apt-get purge -y curl gnupg && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*
ENV GREENLIGHT_PG_BIN=/usr/lib/postgresql/18/bin

RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /opt/greenlight
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/opt/greenlight/.venv
# dependencies first (cached while only the code changes); no dev tools, and not the lab: it is a
# workspace member of its own (lab/), whose pyproject the lock names but nothing here installs.
COPY pyproject.toml uv.lock README.md ./
COPY lab/pyproject.toml ./lab/
RUN uv sync --frozen --no-default-groups --no-install-project --no-install-workspace
# the product as a wheel (greenlight, greenlight.flows, greenlight.tasks), not an editable tree
COPY greenlight ./greenlight
RUN uv sync --frozen --no-default-groups --no-editable && rm -rf ./greenlight
# the configuration: profiles (environments/), manifests, the deployments
COPY deployments ./deployments
COPY prefect.yaml prefect.kubernetes.yaml ./
ENV PATH=/opt/greenlight/.venv/bin:$PATH \
    GREENLIGHT_CONFIG=/opt/greenlight/deployments
USER 65532:65532
