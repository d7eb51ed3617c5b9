"""Background jobs every instance runs: reminders, auto-completion, housekeeping (D35)."""

from server.jobs.clock import Clock, FixedClock, SystemClock
from server.jobs.runner import Job, JobRunner
from server.jobs.schedule import create_runner

__all__ = ["Clock", "FixedClock", "Job", "JobRunner", "SystemClock", "create_runner"]
