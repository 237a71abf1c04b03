"""The operator's knobs: the shared ``VIDUP_*`` settings plus a few of its own timing choices."""

from __future__ import annotations

from dataclasses import dataclass, field

from vidup.settings import Settings, env_float
from vidup_operator.decisions import Policy


@dataclass(frozen=True)
class OperatorConfig:
    settings: Settings = field(default_factory=Settings)
    #: VIDUP_OPERATOR_POLL_SECONDS: how often a busy resource looks at its job without news.
    poll_seconds: float = 0.5
    #: VIDUP_OPERATOR_MIN_PATCH_SECONDS: at most one progress patch per resource this often.
    min_patch_seconds: float = 0.25
    #: VIDUP_OPERATOR_LEASE_SECONDS: the leader lease; a standby takes over within about this long.
    lease_seconds: float = 10.0

    @classmethod
    def from_env(cls) -> OperatorConfig:
        return cls(
            settings=Settings.from_env(),
            poll_seconds=env_float("VIDUP_OPERATOR_POLL_SECONDS", cls.poll_seconds),
            min_patch_seconds=env_float("VIDUP_OPERATOR_MIN_PATCH_SECONDS", cls.min_patch_seconds),
            lease_seconds=env_float("VIDUP_OPERATOR_LEASE_SECONDS", cls.lease_seconds),
        )

    @property
    def policy(self) -> Policy:
        s = self.settings
        return Policy(s.max_attempts, s.retry_base_seconds, s.retry_max_seconds)
