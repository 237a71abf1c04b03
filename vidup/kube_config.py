"""How every component finds the Kubernetes API: one rule, one place."""

from __future__ import annotations

import os

from kubernetes import client, config


def client_configuration() -> client.Configuration:
    """A fresh Configuration: the pod's service account when in a pod without ``KUBECONFIG``, else
    ``KUBECONFIG`` (or ``~/.kube/config``). Never the kubernetes module's global default, so callers
    may tune it (e.g. the pool size) without touching anyone else's client."""
    configuration = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config(client_configuration=configuration)
    else:
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration)
    return configuration
