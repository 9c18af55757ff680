#!/usr/bin/env python3
"""Writes N synthetic instance reports (format 2, ~2.5 KiB each, as bootlace writes them)
under DIR/reports/<environment>/<role>/<machine_id>.json: for a file:// store, or a
bucket that `rclone serve s3` serves from disk. A fixed mix of environments, roles,
tags and statuses, 2 % stale; seeded, so every run writes the same fleet apart from
the timestamps.

    bench/fleet-reports.py DIR N
"""

import datetime
import json
import os
import random
import sys

ENVIRONMENTS = ["prod", "prod", "prod", "staging", "canary"]
ROLES = ["web", "api", "worker", "cache", "batch"]
TAGS = ["2026.11.25-1", "2026.11.28-3", "2026.11.30-1"]
STATUSES = ["ok"] * 94 + ["degraded"] * 3 + ["failed"] * 2 + ["rolled_back"]


def main():
    root, count = sys.argv[1], int(sys.argv[2])
    rng = random.Random(42)
    now = datetime.datetime.now(datetime.timezone.utc)
    made = set()
    for i in range(count):
        env, role = rng.choice(ENVIRONMENTS), rng.choice(ROLES)
        machine_id = f"i-{i:017x}"
        age = rng.uniform(3 * 3600, 48 * 3600) if rng.random() < 0.02 else rng.uniform(0, 3600)
        at = (now - datetime.timedelta(seconds=age)).strftime("%Y-%m-%dT%H:%M:%SZ")
        status = rng.choice(STATUSES)
        tag = rng.choice(TAGS)
        report = {
            "format_version": 2,
            "status": status,
            "machine_id": machine_id,
            "environment": env,
            "role": role,
            "context": "b",
            "tag": tag,
            "sha256": "%064x" % rng.getrandbits(256),
            "deployed": False,
            "init": {
                "script": f"b/{env}/bootstrapper.sh",
                "exit_code": 0 if status == "ok" else 1,
                "duration_ms": rng.randrange(5, 5000),
                "output_tail": "starting the service\n" * 80,
            },
            "trigger": "agent",
            "previous_tag": None,
            "health": None,
            "rolled_back_from": None,
            "rollout": None,
            "checked_at": at,
            "hostname": f"ip-10-0-{i // 256 % 256}-{i % 256}",
            "timings_ms": {"identity": 3, "deploy": 0, "init": 10, "total": 14},
            "started_at": at,
            "finished_at": at,
            "bootlace_version": "0.1.0",
            "error": None if status == "ok" else f"the release {status}",
        }
        folder = os.path.join(root, "reports", env, role)
        if folder not in made:
            os.makedirs(folder, exist_ok=True)
            made.add(folder)
        with open(os.path.join(folder, machine_id + ".json"), "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
