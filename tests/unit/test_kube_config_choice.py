"""Which Kubernetes configuration a profile's ``cluster`` section means, in a pod and outside one."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from greenlight.clients.kube import IN_POD_ENV, ConfigChoice, choose_config, load_api_client
from greenlight.errors import InputInvalid
from greenlight.settings import Cluster, load_profile

POD = {IN_POD_ENV: "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
POD_WITH_KUBECONFIG = {**POD, "KUBECONFIG": "/home/me/.kube/config"}
LAPTOP = {"KUBECONFIG": "/home/me/.kube/config"}
BARE: dict[str, str] = {}
DR = "/etc/greenlight/dr-cluster/kubeconfig"

# (context, kubeconfig, in_cluster, environment) -> (in_cluster, kubeconfig file, context)
CASES = [
    # nothing named: the pod's service account inside a pod; $KUBECONFIG of the pod's env does not count
    (None, None, None, POD, (True, None, None)),
    (None, None, None, POD_WITH_KUBECONFIG, (True, None, None)),
    # a named context always means a kubeconfig, in a pod too (the lab's lab-primary / lab-dr)
    ("lab-primary", None, None, LAPTOP, (False, "/home/me/.kube/config", "lab-primary")),
    ("lab-dr", None, None, BARE, (False, None, "lab-dr")),
    ("gke_p_r_c", None, None, POD, (False, None, "gke_p_r_c")),
    # the DR cluster from a flow pod in the primary: the mounted kubeconfig Secret
    ("sma-dr", DR, None, POD, (False, DR, "sma-dr")),
    (None, DR, None, POD_WITH_KUBECONFIG, (False, DR, None)),
    # explicit choices win over where the process runs
    (None, None, True, BARE, (True, None, None)),
    (None, None, True, POD, (True, None, None)),
    (None, None, False, POD_WITH_KUBECONFIG, (False, "/home/me/.kube/config", None)),
    ("x", None, False, POD, (False, None, "x")),
]


@pytest.mark.parametrize(("context", "kubeconfig", "in_cluster", "env", "want"), CASES)
def test_choice_of_configuration(
    context: str | None,
    kubeconfig: str | None,
    in_cluster: bool | None,
    env: dict[str, str],
    want: tuple[bool, str | None, str | None],
) -> None:
    """Each (profile cluster, environment) gives the in-cluster account or the kubeconfig file and context."""
    got = choose_config(context, kubeconfig, in_cluster, env)
    assert (got.in_cluster, got.kubeconfig, got.context) == want
    assert got.reason


@pytest.mark.parametrize(
    ("context", "kubeconfig", "in_cluster", "env", "says"),
    [
        (None, None, None, LAPTOP, "not a pod"),  # no guessing from the current context
        (None, None, None, BARE, "not a pod"),
        ("x", None, True, POD, "name no context"),
        (None, DR, True, POD, "name no context"),
    ],
)
def test_ambiguous_or_contradictory_cluster_is_refused(
    context: str | None, kubeconfig: str | None, in_cluster: bool | None, env: dict[str, str], says: str
) -> None:
    """Nothing named outside a pod, or in_cluster with a kubeconfig, is an input error that says why."""
    with pytest.raises(InputInvalid, match=says):
        choose_config(context, kubeconfig, in_cluster, env)


@pytest.mark.parametrize(
    ("section", "ok"),
    [
        ({}, True),
        ({"context": "x"}, True),
        ({"kubeconfig": DR, "context": "sma-dr"}, True),
        ({"in_cluster": True}, True),
        ({"in_cluster": False}, True),
        ({"in_cluster": True, "context": "x"}, False),
        ({"in_cluster": True, "kubeconfig": DR}, False),
    ],
)
def test_profile_cluster_section_validation(section: dict[str, object], ok: bool) -> None:
    """The profile accepts every section choose_config can act on and refuses in_cluster with a kubeconfig."""
    if ok:
        Cluster.model_validate(section)
    else:
        with pytest.raises(ValueError, match="exactly one"):
            Cluster.model_validate(section)


def test_shipped_profiles_run_in_cluster_in_the_primary_and_reach_dr_by_kubeconfig() -> None:
    """In a flow pod of the primary, staging and production use the pod's account; dr the mounted kubeconfig."""
    from greenlight.settings import REPO_ROOT

    envs = REPO_ROOT / "deployments" / "environments"
    for name in ("staging", "production"):
        c = load_profile(name, envs).cluster
        assert choose_config(c.context, c.kubeconfig, c.in_cluster, POD).in_cluster, name
    c = load_profile("dr", envs).cluster
    got = choose_config(c.context, c.kubeconfig, c.in_cluster, POD)
    assert (got.in_cluster, got.kubeconfig) == (False, c.kubeconfig) and c.kubeconfig


def _kubeconfig(path: Path, server: str) -> None:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "dr", "cluster": {"server": server}}],
                "users": [{"name": "drill", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "sma-dr", "context": {"cluster": "dr", "user": "drill"}}],
                "current-context": "sma-dr",
            }
        )
    )


def test_named_kubeconfig_is_read_even_in_a_pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kubeconfig file the profile names is the one loaded, whatever $KUBECONFIG says and in a pod."""
    path = tmp_path / "kubeconfig"
    _kubeconfig(path, "https://dr.example:6443")
    monkeypatch.setenv(IN_POD_ENV, "10.0.0.1")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "other"))
    api = load_api_client("sma-dr", str(path))
    assert api.configuration.host == "https://dr.example:6443"
    api.close()


def test_missing_kubeconfig_names_the_file(tmp_path: Path) -> None:
    """A profile that names a kubeconfig that is not there (a Secret not mounted) fails naming the path."""
    missing = tmp_path / "dr-cluster" / "kubeconfig"
    with pytest.raises(InputInvalid, match=str(missing)):
        load_api_client("sma-dr", str(missing))


def test_in_cluster_without_a_service_account_token_is_an_input_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In a pod whose service account token is not mounted, the error says in-cluster, not a traceback."""
    monkeypatch.setenv(IN_POD_ENV, "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    if Path("/var/run/secrets/kubernetes.io/serviceaccount/token").exists():
        pytest.skip("this machine is a pod with a service account token")
    with pytest.raises(InputInvalid, match="in-cluster service account"):
        load_api_client()


def test_describe_never_shows_more_than_where() -> None:
    """A choice describes itself by context and file, for errors and reports."""
    assert ConfigChoice(True, None, None, "r").describe() == "in-cluster service account"
    assert "sma-dr" in ConfigChoice(False, DR, "sma-dr", "r").describe()
