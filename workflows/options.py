"""Task queues, timeouts and retry policies, named once and shared by workflows and workers."""

from datetime import timedelta

from temporalio.common import RetryPolicy, SearchAttributeKey

# Workers by role: orchestration runs workflows and light activities; training runs one
# trial per slot on a training host.
ORCHESTRATION_QUEUE = "rea-orchestration"
TRAINING_QUEUE = "rea-training"
# Launching, polling and stopping external jobs: short activities on the host that runs the
# jobs, on a queue of their own so that they never wait behind an in-worker training.
JOBS_QUEUE = "rea-jobs"

# Planning reads a dataset header and may call an LLM: minutes at most.
PLANNING_TIMEOUT = timedelta(minutes=10)
# A trial may train for days; its heartbeat timeout (per request) notices a dead worker.
TRIAL_TIMEOUT = timedelta(days=7)
RECORD_TIMEOUT = timedelta(seconds=30)
JOB_CONTROL_TIMEOUT = timedelta(minutes=2)
# Stopping a job waits for it to checkpoint and exit.
JOB_STOP_TIMEOUT = timedelta(minutes=15)

# Errors a retry cannot fix: the spec or the data is wrong, or the run diverged.
# An out-of-memory run, a missing kernel or a refused path fail the same way on a retry: the
# runbooks remedy them with a changed spec or escalate them.
TRIAL_NON_RETRYABLE = [
    "BadSpecError",
    "BadDataError",
    "DivergenceError",
    "OutOfMemoryError",
    "KernelUnavailableError",
    "AccessDenied",
]
# Most retries follow a dead worker or host (each resumes from the last checkpoint), so allow
# several; errors of the spec or data are never retried.
TRIAL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=10,
    non_retryable_error_types=TRIAL_NON_RETRYABLE,
)
# Planning retries transient errors (a busy host, a flaky filesystem) with backoff, for as long
# as it takes; errors no retry can fix are raised non-retryable by the activity and end the
# campaign in phase "failed".
PLANNING_RETRY = RetryPolicy(
    maximum_interval=timedelta(minutes=1),
    non_retryable_error_types=["BadSpecError", "BadDataError", "OutOfMemoryError"],
)
# The LLM agent: the SDK's retries are off, so Temporal retries an endpoint that failed or timed
# out, a few times; then the campaign plans without it (the knowledge agent always proposes).
LLM_TIMEOUT = timedelta(minutes=5)
LLM_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=3,
)
# Diagnosing a failure reads the runbooks and the insights database, and may ask the LLM
# agent: minutes at most; a few tries, then the trial escalates with the error.
DIAGNOSE_TIMEOUT = timedelta(minutes=5)
DIAGNOSE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=3,
)
# The preflight checklist loads the data and runs one training step per planned spec.
PREFLIGHT_TIMEOUT = timedelta(minutes=30)
# It heartbeats after each item; one item (loading a large dataset's sample) takes minutes.
PREFLIGHT_HEARTBEAT = timedelta(minutes=10)
# Slack notifications: a message is worth a few quick tries, never a campaign's progress.
# The workflow awaits them only where it waits for a person anyway (and at the end), catches
# the failure and goes on: at most about 3 x 15 s + 3 s is what a Slack outage costs.
NOTIFY_TIMEOUT = timedelta(seconds=15)
NOTIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
    non_retryable_error_types=["SlackConfigError"],
)
# Bookkeeping activities retry until they succeed; their writes are idempotent.
BOOKKEEPING_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=1))

# Search attributes that let the Web UI and `rea campaign list` tell the story.
PHASE = SearchAttributeKey.for_keyword("ReaPhase")
BEST_METRIC = SearchAttributeKey.for_float("ReaBestMetric")
DEVICE_HOURS_SPENT = SearchAttributeKey.for_float("ReaDeviceHoursSpent")
DEVICE_HOURS_APPROVED = SearchAttributeKey.for_float("ReaDeviceHoursApproved")
NEEDS_ATTENTION = SearchAttributeKey.for_bool("ReaNeedsAttention")
# Escalated trials waiting for an engineer, e.g. ``ReaTrialsNeedingAttention = 'v-x.s0'``.
TRIALS_NEEDING_ATTENTION = SearchAttributeKey.for_keyword_list("ReaTrialsNeedingAttention")
SEARCH_ATTRIBUTES = (
    PHASE,
    BEST_METRIC,
    DEVICE_HOURS_SPENT,
    DEVICE_HOURS_APPROVED,
    NEEDS_ATTENTION,
    TRIALS_NEEDING_ATTENTION,
)
