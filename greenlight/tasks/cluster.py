"""The one way a task opens a profile's cluster: ``with cluster(profile) as kube: ...``.

The connection honours the profile's whole ``cluster`` section: which kubeconfig, context or
service account (:func:`greenlight.clients.kube.choose_config`) and ``request_timeout_s``, the
client-side timeout of every API call. The client is closed when the block ends, however it ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from greenlight.clients.kube import Kube
from greenlight.settings import Profile


def connect(profile: Profile) -> Kube:
    """An open client for the profile's cluster, each call bounded by ``cluster.request_timeout_s``;
    the caller closes it (prefer :func:`cluster`, which does)."""
    c = profile.cluster
    return Kube.connect(
        context=c.context, kubeconfig=c.kubeconfig, in_cluster=c.in_cluster, timeout_s=c.request_timeout_s
    )


@contextmanager
def cluster(profile: Profile) -> Iterator[Kube]:
    """The profile's cluster for the length of a ``with`` block (see :func:`connect`), closed after it."""
    kube = connect(profile)
    try:
        yield kube
    finally:
        kube.close()
