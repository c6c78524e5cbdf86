"""greenlight.tasks.cluster: the one way tasks open a profile's cluster honours the whole ``cluster`` section."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from greenlight.settings import Profile, load_profile
from greenlight.tasks.cluster import cluster, connect
from greenlight_lab.state import LAB_ENVIRONMENTS

SERVER = "https://127.0.0.1:6"  # never contacted: opening a client makes no request


def _profile_with(tmp_path: Path, timeout_s: float) -> Profile:
    """The lab's staging profile pointed at a kubeconfig of its own, with ``request_timeout_s`` set."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": SERVER, "insecure-skip-tls-verify": True}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "ctx",
            }
        )
    )
    base = load_profile("staging", LAB_ENVIRONMENTS)
    c = base.cluster.model_copy(
        update={
            "context": "ctx",
            "kubeconfig": str(kubeconfig),
            "in_cluster": None,
            "request_timeout_s": timeout_s,
        }
    )
    return base.model_copy(update={"cluster": c})


@pytest.mark.parametrize("timeout_s", [2.5, 37.0])
def test_request_timeout_of_the_profile_reaches_the_client(tmp_path: Path, timeout_s: float) -> None:
    """Every call of the opened client is bounded by the profile's cluster.request_timeout_s, on the
    server its kubeconfig names (not the client's 10 s default)."""
    profile = _profile_with(tmp_path, timeout_s)
    with cluster(profile) as kube:
        assert kube.timeout_s == timeout_s
        assert kube.api_client.configuration.host == SERVER
    kube = connect(profile)
    try:
        assert kube.timeout_s == timeout_s
    finally:
        kube.close()


def test_the_client_is_closed_when_the_block_raises(tmp_path: Path) -> None:
    """A failure inside the block still closes the client (its connection pools are released)."""
    profile = _profile_with(tmp_path, 3.0)
    with pytest.raises(RuntimeError, match="inside"), cluster(profile) as kube:
        kube.api_client.rest_client.pool_manager.connection_from_url(SERVER)
        assert len(kube.api_client.rest_client.pool_manager.pools) == 1
        raise RuntimeError("inside")
    assert len(kube.api_client.rest_client.pool_manager.pools) == 0
