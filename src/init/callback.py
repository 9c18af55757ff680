# bootlace's Ansible callback (DESIGN §6.10): one JSON line per task result, and the
# play's totals at the end, appended to the file BOOTLACE_ANSIBLE_EVENTS names. bootlace
# writes this file under its state dir and enables it through the environment; it reads
# the lines back for the report. Task names and the paths a task touched are recorded;
# diffs and results never are (they may hold secrets).
from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: bootlace
type: aggregate
short_description: task results as JSON lines, for bootlace's report
description:
  - One JSON line per task result and the final totals, to BOOTLACE_ANSIBLE_EVENTS.
"""

# Each name and path is cut to this many characters; bootlace caps them again.
LIMIT = 512


def _paths(result):
    found = []
    for key in ("dest", "path"):
        value = result.get(key)
        if isinstance(value, str):
            found.append(value)
    diffs = result.get("diff")
    for diff in diffs if isinstance(diffs, list) else [diffs]:
        if isinstance(diff, dict) and isinstance(diff.get("before_header"), str):
            found.append(diff["before_header"])
    unique = []
    for path in found:
        if path.startswith("/") and path[:LIMIT] not in unique:
            unique.append(path[:LIMIT])
    return unique[:16]


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bootlace"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        path = os.environ.get("BOOTLACE_ANSIBLE_EVENTS")
        self._out = open(path, "a", encoding="utf-8") if path else None

    def _emit(self, record):
        if self._out is not None:
            self._out.write(json.dumps(record) + "\n")
            self._out.flush()

    def _task(self, result, status):
        self._emit(
            {
                "event": "task",
                "status": status,
                "task": str(result._task.get_name())[:LIMIT],
                "paths": _paths(result._result) if status == "changed" else [],
            }
        )

    def v2_runner_on_ok(self, result):
        self._task(result, "changed" if result._result.get("changed") else "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._task(result, "ignored" if ignore_errors else "failed")

    def v2_runner_on_skipped(self, result):
        self._task(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._task(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        totals = dict.fromkeys(
            ("ok", "changed", "failures", "skipped", "unreachable", "rescued", "ignored"), 0
        )
        for host in stats.processed:
            for key, count in stats.summarize(host).items():
                if key in totals:
                    totals[key] += count
        self._emit({"event": "stats", **totals})
