//! Synthetic fleets: reports shaped as instances write them (format 1 or 2), written
//! straight into a store, many at a time.

use std::time::{Duration, SystemTime};

use serde_json::json;

/// One instance's report, as the fleet view will read it.
#[derive(Clone, Debug)]
pub struct Instance {
    pub environment: &'static str,
    pub role: &'static str,
    pub machine_id: String,
    pub tag: Option<&'static str>,
    pub status: &'static str,
    /// How long ago it last reported.
    pub age: Duration,
    pub format_version: u32,
}

impl Instance {
    pub fn new(environment: &'static str, role: &'static str, machine_id: &str, tag: &'static str) -> Self {
        Self {
            environment,
            role,
            machine_id: machine_id.to_owned(),
            tag: Some(tag),
            status: "ok",
            age: Duration::from_secs(60),
            format_version: 2,
        }
    }

    pub fn status(mut self, status: &'static str) -> Self {
        self.status = status;
        self
    }

    pub fn age(mut self, age: Duration) -> Self {
        self.age = age;
        self
    }

    pub fn format_1(mut self) -> Self {
        self.format_version = 1;
        self
    }

    pub fn key(&self) -> String {
        format!(
            "reports/{}/{}/{}.json",
            self.environment, self.role, self.machine_id
        )
    }

    /// The report's bytes: every field of its format, an output tail of a few KiB.
    pub fn report(&self) -> Vec<u8> {
        let at = humantime::format_rfc3339_seconds(SystemTime::now() - self.age).to_string();
        let mut report = json!({
            "format_version": self.format_version,
            "status": self.status,
            "machine_id": self.machine_id,
            "environment": self.environment,
            "role": self.role,
            "context": "b",
            "tag": self.tag,
            "sha256": "0".repeat(64),
            "deployed": true,
            "init": {"script": format!("b/{}/bootstrapper.sh", self.environment), "exit_code": 0,
                     "duration_ms": 12, "output_tail": "starting the service\n".repeat(100)},
            "timings_ms": {"identity": 1, "deploy": 20, "init": 12, "total": 35},
            "started_at": at,
            "finished_at": at,
            "bootlace_version": "0.1.0",
            "error": if self.status == "ok" { None } else { Some(format!("the release {}", self.status)) },
        });
        if self.format_version == 2 {
            let extra = json!({
                "trigger": "agent", "previous_tag": null, "health": null, "rolled_back_from": null,
                "rollout": null, "checked_at": at, "hostname": format!("host-{}", self.machine_id),
            });
            report
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
        }
        serde_json::to_vec_pretty(&report).unwrap()
    }
}

/// A pointer object naming `tag` at `serial`.
pub fn pointer(tag: &str, serial: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "format_version": 1, "tag": tag, "sha256": "a".repeat(64), "size": 1, "serial": serial,
        "updated_at": "2026-11-30T00:00:00Z", "updated_by": "test", "history": [],
    }))
    .unwrap()
}

/// Writes every report into the directory of a `file://` store (or a bucket that a
/// server such as `rclone serve s3` serves from disk).
pub fn write_to_dir(root: &std::path::Path, instances: &[Instance]) {
    for instance in instances {
        let path = root.join(instance.key());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, instance.report()).unwrap();
    }
}
