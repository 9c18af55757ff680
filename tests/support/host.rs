//! One simulated instance for black-box tests: a user-data file, a config file, a state
//! dir, a log dir its init scripts write to (`$LOG_DIR`), and a store — a `file://`
//! directory of its own, or a fresh prefix in moto.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Outcome, bootlace, run, s3, write};

/// The machine id every `Host` has.
pub const MACHINE_ID: &str = "i-test";

pub struct Host {
    pub dir: tempfile::TempDir,
    /// A prefix in moto, or `None` for a `file://` store in `dir/store`.
    place: Option<String>,
    /// Variables every command gets besides the host's own.
    env: std::cell::RefCell<Vec<(String, String)>>,
}

impl Host {
    /// An instance on a `file://` store, with `config` as its config file.
    pub fn new(config: &str) -> Self {
        Self::with_place(config, None)
    }

    /// An instance on a fresh prefix in moto.
    pub fn on_moto(config: &str) -> Self {
        Self::with_place(config, Some(s3::moto().place()))
    }

    fn with_place(config: &str, place: Option<String>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "user-data",
            format!("environment=prod\nrole=web\ncontext=b\nmachine_id={MACHINE_ID}\n"),
        );
        write(dir.path(), "config.toml", config);
        std::fs::create_dir(dir.path().join("log")).unwrap();
        Self {
            dir,
            place,
            env: Default::default(),
        }
    }

    /// The moto prefix of an instance made with [`Host::on_moto`].
    pub fn place(&self) -> Option<&str> {
        self.place.as_deref()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Replaces the config file.
    pub fn configure(&self, config: &str) {
        write(self.dir.path(), "config.toml", config);
    }

    /// Sets `name` for every later command (`BOOTLACE_SIGN_KEY`, say).
    pub fn set_env(&self, name: &str, value: impl Into<String>) {
        let mut env = self.env.borrow_mut();
        env.retain(|(n, _)| n != name);
        env.push((name.to_owned(), value.into()));
    }

    /// `bootlace` as this instance runs it.
    pub fn command(&self) -> Command {
        let mut command = bootlace();
        let store = match &self.place {
            Some(place) => {
                command
                    .env("AWS_ENDPOINT_URL", &s3::moto().endpoint)
                    .env("AWS_ACCESS_KEY_ID", s3::ACCESS_KEY)
                    .env("AWS_SECRET_ACCESS_KEY", s3::SECRET_KEY);
                format!("s3://{place}")
            }
            None => format!("file://{}", self.path("store").display()),
        };
        command
            .env("BOOTLACE_CONFIG", self.path("config.toml"))
            .env("BOOTLACE_STORE", store)
            .env("BOOTLACE_STATE_DIR", self.path("state"))
            .env(
                "BOOTLACE_IDENTITY",
                format!("file:{}", self.path("user-data").display()),
            )
            .env("LOG_DIR", self.path("log"))
            .envs(self.env.borrow().iter().map(|(n, v)| (n, v)));
        command
    }

    pub fn run(&self, args: &[&str]) -> Outcome {
        run(self.command().args(args))
    }

    /// Writes a release tree `tree-<tag>` holding `files` and, with `script`, an init
    /// script `bootstrap/b/bootstrapper.sh` (`#!/bin/sh` and `script`), and pushes it
    /// as `tag`, pointing prod at it when `promote`.
    pub fn push(&self, tag: &str, script: Option<&str>, files: &[(&str, &[u8])], promote: bool) {
        let tree = self.path(&format!("tree-{tag}"));
        for (name, contents) in files {
            let path = tree.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, contents).unwrap();
        }
        if let Some(body) = script {
            let file = tree.join("bootstrap/b/bootstrapper.sh");
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, format!("#!/bin/sh\n{body}\n")).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::create_dir_all(&tree).unwrap();
        let tree = tree.to_str().unwrap();
        let mut args = vec!["release", "push", tree, "--tag", tag];
        if promote {
            args.extend(["--env", "prod"]);
        }
        let out = self.run(&args);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }

    pub fn promote(&self, tag: &str) {
        let out = self.run(&["release", "promote", tag, "--env", "prod"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }

    /// `last-run.json`.
    pub fn report(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.path("state/last-run.json")).unwrap()).unwrap()
    }

    /// Where a state dir link (`current`, `good`, …) points, if it exists.
    pub fn link(&self, name: &str) -> Option<String> {
        std::fs::read_link(self.path(&format!("state/{name}")))
            .ok()
            .map(|p| p.display().to_string())
    }

    /// Whether an init script left `$LOG_DIR/<name>`.
    pub fn logged(&self, name: &str) -> bool {
        self.path("log").join(name).exists()
    }

    /// The lines init scripts appended to `$LOG_DIR/init.log`.
    pub fn inits(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("log/init.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// Waits up to `limit` for `check`.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}
