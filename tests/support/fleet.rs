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
    /// How long ago it last ran, when that is earlier than its last report.
    pub ran: Option<Duration>,
    /// Free text in the report: its error, and its init script's name.
    pub text: Option<String>,
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
            ran: None,
            text: None,
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

    /// Last ran `ran` ago, though it reported (checked the pointer) later.
    pub fn ran(mut self, ran: Duration) -> Self {
        self.ran = Some(ran);
        self
    }

    /// `text` as its error and its init script's name.
    pub fn text(mut self, text: &str) -> Self {
        self.text = Some(text.to_owned());
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
        let time = |age| humantime::format_rfc3339_seconds(SystemTime::now() - age).to_string();
        let at = time(self.age);
        let ran = time(self.ran.unwrap_or(self.age));
        let script = self
            .text
            .clone()
            .unwrap_or_else(|| format!("b/{}/bootstrapper.sh", self.environment));
        let error = match (&self.text, self.status) {
            (Some(text), _) => Some(text.clone()),
            (None, "ok") => None,
            (None, status) => Some(format!("the release {status}")),
        };
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
            "init": {"script": script, "exit_code": 0,
                     "duration_ms": 12, "output_tail": "starting the service\n".repeat(100)},
            "timings_ms": {"identity": 1, "deploy": 20, "init": 12, "total": 35},
            "started_at": ran,
            "finished_at": ran,
            "bootlace_version": "0.1.0",
            "error": error,
        });
        if self.format_version == 2 {
            // Format 2's heartbeat: the last pointer check.
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

/// A format 2 pointer: `stable` for everyone, `target` rolling out in waves
/// (1 % at once, 25 % after a second) that started an hour ago.
pub fn rollout_pointer(stable: &str, target: &str, serial: u64) -> Vec<u8> {
    let started = humantime::format_rfc3339_seconds(SystemTime::now() - Duration::from_secs(3600));
    serde_json::to_vec(&json!({
        "format_version": 2, "tag": stable, "sha256": "a".repeat(64), "size": 1, "serial": serial,
        "updated_at": "2026-11-30T00:00:00Z", "updated_by": "test", "history": [],
        "rollout": {"tag": target, "sha256": "b".repeat(64), "size": 1, "salt": target,
                    "percent": 1.0, "waves": [{"percent": 1, "after": "0s"}, {"percent": 25, "after": "1s"},
                                              {"percent": 100, "after": "2d"}],
                    "started_at": started.to_string(), "halted": false},
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
