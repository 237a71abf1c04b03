"""The operator's metric arithmetic: what a written decision counts, and resources by phase."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from vidup_operator import status as st
from vidup_operator.decisions import Decision, Event, JobCommand, Observation
from vidup_operator.jobview import JobState, JobView
from vidup_operator.metrics import NEW, DecisionFacts, ResourceView, decision_facts

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
CREATED = "2026-01-01T12:00:00Z"


def obs(job: JobView, status: dict[str, object] | None = None) -> Observation:
    return Observation(uid="u", generation=1, renditions=(720,), status=status or {}, job=job, progress=None,
                       now=T0 + timedelta(seconds=60))


def test_new_resource_is_queued() -> None:
    decision = Decision(job=JobCommand.ENQUEUE, job_id="j", status={"phase": "Queued", "attempts": 0})
    assert decision_facts({}, decision, obs(JobView(JobState.MISSING)), CREATED) == DecisionFacts(
        transition=(NEW, "Queued"))


def test_first_start_measures_the_wait_since_the_upload() -> None:
    job = JobView(JobState.RUNNING, started_at=T0 + timedelta(seconds=7))
    decision = Decision(status={"phase": "Processing", "attempts": 1}, events=(Event("Started", "x"),))
    facts = decision_facts({"phase": "Queued", "attempts": 0}, decision, obs(job), CREATED)
    assert facts.transition == ("Queued", "Processing") and facts.upload_to_start == 7.0


def test_the_same_run_seen_again_is_not_a_new_start() -> None:
    job = JobView(JobState.RUNNING, started_at=T0 + timedelta(seconds=7))
    decision = Decision(status={"phase": "Processing", "attempts": 1})
    facts = decision_facts({"phase": "Queued", "attempts": 1}, decision, obs(job), CREATED)
    assert facts.upload_to_start is None


def test_a_run_seen_only_once_ended_counts_its_start_and_its_duration() -> None:
    job = JobView(JobState.FINISHED, started_at=T0 + timedelta(seconds=2), ended_at=T0 + timedelta(seconds=5))
    decision = Decision(status={"phase": "Completed", "attempts": 1})
    facts = decision_facts({"phase": "Queued", "attempts": 0}, decision, obs(job), CREATED)
    assert facts == DecisionFacts(transition=("Queued", "Completed"), upload_to_start=2.0, start_to_complete=3.0)


def test_retry_then_requeue_by_what_was_seen() -> None:
    failed = JobView(JobState.FAILED, ended_at=T0)
    scheduled = Decision(status={"phase": "Queued", "reason": st.REASON_RETRYING, "attempts": 1})
    facts = decision_facts({"phase": "Processing", "attempts": 1}, scheduled, obs(failed), CREATED)
    assert facts.retry and facts.requeue_reason is None and facts.transition == ("Processing", "Queued")
    again = Decision(job=JobCommand.REPLACE, job_id="j", status={"phase": "Queued", "reason": st.REASON_QUEUED})
    facts = decision_facts({"phase": "Queued", "attempts": 1}, again, obs(failed), CREATED)
    assert facts == DecisionFacts(requeue_reason="failed")


def test_a_job_rq_put_back_is_a_requeue_without_a_new_enqueue() -> None:
    decision = Decision(status={"phase": "Queued", "reason": st.REASON_REQUEUED})
    facts = decision_facts({"phase": "Processing", "attempts": 1}, decision, obs(JobView(JobState.WAITING)), CREATED)
    assert facts.requeue_reason == "waiting"


def test_resource_view_counts_every_phase() -> None:
    view = ResourceView()
    view.seen("a", None)
    view.seen("b", "Queued")
    view.seen("b", "Completed")
    view.seen("c", "Completed")
    view.gone("c")
    assert view.counts() == {NEW: 1, "Pending": 0, "Queued": 0, "Processing": 0, "Completed": 1, "Failed": 0}
    family = next(iter(view.collect()))
    assert {s.labels["phase"]: s.value for s in family.samples}["Completed"] == 1
