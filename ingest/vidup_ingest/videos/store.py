"""Reading VideoTranscode resources for the status API: get, list a tenant's page, watch one.

The resources are the only store of video state, so the status API reads them straight from the
Kubernetes API (the ingest's ServiceAccount needs ``get``, ``list`` and ``watch`` on
``videotranscodes``), through the process's one client (``kube_client``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.watch import Watch

from vidup.resource import GROUP, PLURAL, VERSION
from vidup_ingest.errors import TusError
from vidup_ingest.kube_client import custom_objects_api

log = logging.getLogger(__name__)

TENANT_LABEL = f"{GROUP}/tenant"


class VideoStore:
    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def get(self, name: str) -> dict[str, Any] | None:
        """The resource, or None if there is none by that name."""
        try:
            obj = custom_objects_api().get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, _request_timeout=10)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _unavailable(exc) from None
        except Exception as exc:  # connection refused, timeouts: the API server is unreachable
            raise _unavailable(exc) from None
        return dict(obj)

    def list_page(self, tenant: str, limit: int, continue_token: str | None) -> tuple[list[dict[str, Any]], str]:
        """One page of the tenant's resources (Kubernetes ``limit``/``continue`` pagination).

        The label selector is applied on every page, so a continue token from another tenant's
        listing still only yields the caller's own resources.
        """
        kwargs: dict[str, Any] = {"label_selector": f"{TENANT_LABEL}={tenant}", "limit": limit,
                                  "_request_timeout": 15}
        if continue_token:
            kwargs["_continue"] = continue_token
        try:
            result = custom_objects_api().list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, **kwargs)
        except ApiException as exc:
            if exc.status == 410:
                raise TusError(410, "the continue token has expired; list again from the start") from None
            if exc.status in (400, 422) and continue_token:
                raise TusError(400, "invalid continue token") from None
            raise _unavailable(exc) from None
        except Exception as exc:
            raise _unavailable(exc) from None
        items = [dict(i) for i in result.get("items", [])]
        return items, str((result.get("metadata") or {}).get("continue") or "")

    def watch(self, name: str, resource_version: str, timeout_seconds: int) -> Iterator[tuple[str, dict[str, Any]]]:
        """(event type, object) for changes of one resource after ``resource_version``, for at
        most ``timeout_seconds``. Raises :class:`WatchExpired` when the version is too old."""
        w = Watch()
        try:
            for event in w.stream(
                custom_objects_api().list_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL,
                field_selector=f"metadata.name={name}", resource_version=resource_version,
                timeout_seconds=timeout_seconds, _request_timeout=timeout_seconds + 10,
            ):
                kind = str(event.get("type", ""))
                obj = event.get("object")
                if kind == "ERROR":
                    if isinstance(obj, dict) and obj.get("code") == 410:
                        raise WatchExpired()
                    raise TusError(503, f"watch failed: {obj}")
                if isinstance(obj, dict):
                    yield kind, obj
        except ApiException as exc:
            if exc.status == 410:
                raise WatchExpired() from None
            raise _unavailable(exc) from None
        finally:
            w.stop()


class WatchExpired(Exception):
    """The watch's resource version is gone; read the resource again and watch from there."""


def _unavailable(exc: Exception) -> TusError:
    log.warning("Kubernetes API unavailable: %s", exc)
    return TusError(503, "the video store (Kubernetes API) is unavailable; retry shortly", {"Retry-After": "5"})
