"""The operator's knobs: the shared ``VIDUP_*`` settings plus a few of its own timing choices."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from vidup.settings import Settings, env_float, env_int
from vidup_operator.decisions import Policy


@dataclass(frozen=True)
class AutoscaleConfig:
    """The operator's own worker autoscaler (:mod:`vidup_operator.autoscaler`), for clusters
    without KEDA. Off unless a Deployment is named; the chart sets these from
    ``worker.autoscaling.operator`` and grants the matching ``deployments/scale`` rule."""

    #: VIDUP_AUTOSCALE_DEPLOYMENT: the worker Deployment to scale, in VIDUP_NAMESPACE; empty: off.
    deployment: str = ""
    #: VIDUP_AUTOSCALE_MIN: replicas kept with nothing to do (0 scales to zero).
    min_replicas: int = 1
    #: VIDUP_AUTOSCALE_MAX: replicas never exceeded, however long the queue.
    max_replicas: int = 4
    #: VIDUP_AUTOSCALE_QUIET_SECONDS: how long the backlog must want fewer workers before a scale down.
    quiet_seconds: float = 120.0
    #: VIDUP_AUTOSCALE_INTERVAL_SECONDS: how often the leader looks at the queue.
    interval_seconds: float = 5.0

    @property
    def enabled(self) -> bool:
        return bool(self.deployment)

    @classmethod
    def from_env(cls) -> AutoscaleConfig:
        """Read and check the knobs: a wrong bound fails the operator's start, not a scale later."""
        config = cls(
            deployment=os.environ.get("VIDUP_AUTOSCALE_DEPLOYMENT", "").strip(),
            min_replicas=env_int("VIDUP_AUTOSCALE_MIN", cls.min_replicas),
            max_replicas=env_int("VIDUP_AUTOSCALE_MAX", cls.max_replicas),
            quiet_seconds=env_float("VIDUP_AUTOSCALE_QUIET_SECONDS", cls.quiet_seconds),
            interval_seconds=env_float("VIDUP_AUTOSCALE_INTERVAL_SECONDS", cls.interval_seconds),
        )
        if not 0 <= config.min_replicas <= config.max_replicas or config.max_replicas < 1:
            raise ValueError(
                f"VIDUP_AUTOSCALE_MIN ({config.min_replicas}) and VIDUP_AUTOSCALE_MAX ({config.max_replicas}) "
                "must satisfy 0 <= min <= max and max >= 1",
            )
        if config.quiet_seconds < 0 or config.interval_seconds <= 0:
            raise ValueError("VIDUP_AUTOSCALE_QUIET_SECONDS must be >= 0 and VIDUP_AUTOSCALE_INTERVAL_SECONDS > 0")
        return config


@dataclass(frozen=True)
class OperatorConfig:
    settings: Settings = field(default_factory=Settings)
    #: VIDUP_OPERATOR_POLL_SECONDS: how often a busy resource looks at its job without news.
    poll_seconds: float = 0.5
    #: VIDUP_OPERATOR_MIN_PATCH_SECONDS: at most one progress patch per resource this often.
    min_patch_seconds: float = 0.25
    #: VIDUP_OPERATOR_LEASE_SECONDS: the leader lease; a standby takes over within about this long.
    lease_seconds: float = 10.0
    #: VIDUP_AUTOSCALE_*: the worker autoscaler (off by default).
    autoscale: AutoscaleConfig = field(default_factory=AutoscaleConfig)

    @classmethod
    def from_env(cls) -> OperatorConfig:
        return cls(
            settings=Settings.from_env(),
            poll_seconds=env_float("VIDUP_OPERATOR_POLL_SECONDS", cls.poll_seconds),
            min_patch_seconds=env_float("VIDUP_OPERATOR_MIN_PATCH_SECONDS", cls.min_patch_seconds),
            lease_seconds=env_float("VIDUP_OPERATOR_LEASE_SECONDS", cls.lease_seconds),
            autoscale=AutoscaleConfig.from_env(),
        )

    @property
    def policy(self) -> Policy:
        s = self.settings
        return Policy(s.max_attempts, s.retry_base_seconds, s.retry_max_seconds)
