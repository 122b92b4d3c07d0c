"""What the workers rely on inside RQ is still there, in the shape they use it.

``worker/dispatch.py`` and ``worker/process.py`` subclass RQ's queue,
intermediate queue, worker and scheduler, and override or call methods that
are not RQ's documented API. ``pyproject.toml`` pins RQ to the minor version
these were written against; an upgrade that moves any of them fails here
first, instead of silently losing recovery of killed jobs.
"""

from __future__ import annotations

import inspect
import re
from importlib.metadata import version
from pathlib import Path

import pytest
from rq import Queue, SimpleWorker, job_lifecycle
from rq.executions import Execution
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.scheduler import RQScheduler
from rq.worker.base import BaseWorker

from worker.dispatch import DeliveryIntermediateQueue, DeliveryQueue
from worker.process import DeliveryScheduler, DeliveryWorker

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"

# (class, attribute, the parameters our code passes or overrides with; None: an attribute, not a call)
RELIED_ON = [
    (IntermediateQueue, "should_be_cleaned_up", ["self", "job_id"]),
    (IntermediateQueue, "get_first_seen", ["self", "job_id"]),
    (Queue, "acquire_maintenance_lock", ["self"]),
    (Queue, "registry_cleaning_key", None),
    (Queue, "intermediate_queue", None),
    (Queue, "prepare_data", ["func", "args", "timeout", "result_ttl", "failure_ttl", "description", "meta", "retry"]),
    (Queue, "enqueue_many", ["self", "job_datas", "pipeline"]),
    (Queue, "dequeue_any", ["queues", "timeout", "connection"]),
    (SimpleWorker, "_start_scheduler", ["self", "burst", "logging_level", "date_format", "log_format"]),
    (SimpleWorker, "request_stop", ["self", "signum", "frame"]),
    (SimpleWorker, "get_heartbeat_ttl", ["self", "job"]),
    (SimpleWorker, "dequeue_timeout", None),
    (SimpleWorker, "execute_job", ["self", "job", "queue"]),
    (SimpleWorker, "prepare_execution", ["self", "job"]),
    (SimpleWorker, "perform_job", ["self", "job", "queue"]),
    (SimpleWorker, "maintain_heartbeats", ["self", "job"]),
    (SimpleWorker, "set_state", ["self", "state"]),
    (SimpleWorker, "_install_signal_handlers", ["self"]),
    (SimpleWorker, "handle_exception", ["self", "job"]),
    (SimpleWorker, "_exc_handlers", None),
    # Redis going away (worker/process.py: RedisLost)
    (SimpleWorker, "queue_class", None),
    (SimpleWorker, "validate_queues", ["self"]),
    (SimpleWorker, "heartbeat", ["self", "timeout", "pipeline"]),
    (SimpleWorker, "check_for_suspension", ["self", "burst"]),
    (SimpleWorker, "run_maintenance_tasks", ["self"]),
    (SimpleWorker, "dequeue_job_and_maintain_ttl", ["self", "timeout", "max_idle_time"]),
    (SimpleWorker, "_pubsub_exception_handler", ["self", "exc", "pubsub", "pubsub_thread"]),
    (SimpleWorker, "unsubscribe", ["self"]),
    (SimpleWorker, "teardown", ["self"]),
    (SimpleWorker, "stop_scheduler", ["self"]),
    (SimpleWorker, "register_death", ["self"]),
    (SimpleWorker, "pubsub", None),
    (SimpleWorker, "pubsub_thread", None),
    (SimpleWorker, "scheduler", None),
    (Execution, "composite_key", None),
    (StartedJobRegistry, "cleanup", ["self", "timestamp"]),
    (job_lifecycle, "call_exception_handlers", ["handlers", "job"]),
    (RQScheduler, "__init__", ["self", "queues", "connection", "name"]),
    (RQScheduler, "get_locking_key", ["name"]),
    (RQScheduler, "work", ["self"]),
    (RQScheduler, "request_stop", ["self"]),
    (RQScheduler, "acquire_locks", ["self"]),
    (RQScheduler, "enqueue_scheduled_jobs", ["self"]),
    (RQScheduler, "release_locks", ["self"]),
    (RQScheduler, "start", ["self"]),
    (RQScheduler, "_install_signal_handlers", ["self"]),
    (Job, "retry_intervals", None),
    (Job, "save_meta", ["self"]),
]


@pytest.mark.parametrize(("owner", "name", "parameters"), RELIED_ON, ids=[f"{o.__name__}.{n}" for o, n, _ in RELIED_ON])
def test_what_we_override_or_call_is_still_in_rq(owner, name, parameters):
    """Each RQ method the workers override or call exists and takes the parameters they use."""
    if parameters is None:
        assert hasattr(owner, name) or name in getattr(owner, "__annotations__", {}) or _set_in_init(owner, name)
        return
    member = getattr(owner, name, None)
    assert callable(member), f"RQ's {owner.__name__}.{name} is gone"
    found = list(inspect.signature(member).parameters)
    missing = [parameter for parameter in parameters if parameter not in found]
    assert not missing, f"RQ's {owner.__name__}.{name} no longer takes {missing}: {found}"


def _set_in_init(owner: type, name: str) -> bool:
    return f"self.{name}" in inspect.getsource(owner.__init__)


def test_a_stop_request_ends_rqs_work_loop_without_a_word():
    """RedisLost is a StopRequested: RQ's loop must end on it quietly, not log it as an unhandled exception."""
    source = inspect.getsource(BaseWorker.work)
    assert "except StopRequested:\n                    break" in source


def test_a_started_job_is_leased_under_its_execution_key():
    """After a reconnect, a process lets the job it lost Redis under lapse by its entry in the started registry."""
    assert "{job_id}:{execution_id}" in inspect.getsource(StartedJobRegistry)
    assert "job_id" in inspect.getsource(Execution).split("def composite_key", 1)[1].split("def ", 1)[0]


def test_our_subclasses_still_subclass_what_they_replace():
    """The queue, worker and scheduler we run are RQ's, with our overrides on top."""
    assert issubclass(DeliveryQueue, Queue) and issubclass(DeliveryIntermediateQueue, IntermediateQueue)
    assert issubclass(DeliveryWorker, SimpleWorker) and issubclass(DeliveryScheduler, RQScheduler)


def test_the_installed_rq_is_the_pinned_minor_version():
    """pyproject pins RQ to the minor version whose internals these tests describe."""
    pin = re.search(r'"rq>=(\d+)\.(\d+)[^"]*,<(\d+)\.(\d+)"', PYPROJECT.read_text())
    assert pin, "pyproject.toml must pin rq to one minor version, as in \"rq>=3.0,<3.1\""
    major, minor = (int(part) for part in version("rq").split(".")[:2])
    assert (major, minor) == (int(pin.group(1)), int(pin.group(2)))
