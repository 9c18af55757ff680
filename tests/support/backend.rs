//! The stores every backend-independent test runs against, as one type: `file://`,
//! `moto_server` (S3 with conditional writes), `rclone serve s3` (SigV4, no
//! conditional writes), SeaweedFS's S3 gateway (conditional writes), Azurite (Azure
//! Blob) and the project's GCS server ([`gcs`]). Each test gets a fresh place in its store and a scratch dir.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::s3::{self, Server};
use super::{Outcome, bootlace, run, write};
use super::{azure, gcs};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    File,
    Moto,
    Rclone,
    Seaweed,
    Azurite,
    Gcs,
}

/// One test's store and scratch space.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub backend: Backend,
    pub store: String,
    pub place: String,
    pub config: PathBuf,
    /// Where bootlace reaches the server, when not at its own address (a proxy).
    through: Option<String>,
}

impl Env {
    pub fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (place, config) = match backend {
            Backend::File => (String::new(), ""),
            Backend::Moto => (s3::moto().place(), ""),
            Backend::Seaweed => (s3::seaweed().place(), ""),
            Backend::Azurite => (azure::azurite().place(), ""),
            Backend::Gcs => (gcs::gcs().place(), ""),
            // rclone ignores preconditions; these tests accept that knowingly.
            Backend::Rclone => (
                s3::rclone().place(),
                "[store]\nrequire_conditional_writes = false\n",
            ),
        };
        let store = match backend {
            Backend::File => format!("file://{}/store", dir.path().display()),
            Backend::Azurite => format!("az://{place}"),
            Backend::Gcs => format!("gs://{place}"),
            Backend::Moto | Backend::Rclone | Backend::Seaweed => format!("s3://{place}"),
        };
        let config = write(dir.path(), "config.toml", config);
        Self {
            dir,
            backend,
            store,
            place,
            config,
            through: None,
        }
    }

    /// This store, reached through `endpoint` (a proxy in front of its server).
    pub fn through(mut self, endpoint: &str) -> Self {
        self.through = Some(endpoint.to_owned());
        self
    }

    /// The server, when it is a process of its own.
    pub fn server(&self) -> Option<&'static Server> {
        match self.backend {
            Backend::File | Backend::Gcs => None,
            Backend::Moto => Some(s3::moto()),
            Backend::Rclone => Some(s3::rclone()),
            Backend::Seaweed => Some(s3::seaweed()),
            Backend::Azurite => Some(azure::azurite()),
        }
    }

    pub fn command(&self) -> Command {
        let mut command = bootlace();
        command
            .env("BOOTLACE_STORE", &self.store)
            .env("BOOTLACE_CONFIG", &self.config);
        let endpoint = |server: &'static Server| self.through.as_deref().unwrap_or(&server.endpoint);
        match (self.backend, self.server()) {
            (Backend::Gcs, _) => {
                assert!(
                    self.through.is_none(),
                    "no proxy in front of the in-process GCS server"
                );
                command.env("GOOGLE_SERVICE_ACCOUNT_KEY", gcs::gcs().service_account_key());
            }
            (_, None) => {}
            (Backend::Azurite, Some(server)) => {
                command
                    .env("AZURE_STORAGE_USE_EMULATOR", "true")
                    .env("AZURITE_BLOB_STORAGE_URL", endpoint(server));
            }
            (_, Some(server)) => {
                command
                    .env("AWS_ENDPOINT_URL", endpoint(server))
                    .env("AWS_ACCESS_KEY_ID", s3::ACCESS_KEY)
                    .env("AWS_SECRET_ACCESS_KEY", s3::SECRET_KEY);
            }
        }
        command
    }

    pub fn run(&self, args: &[&str]) -> Outcome {
        run(self.command().args(args))
    }

    /// Runs with `--json`, asserts success, and parses stdout.
    pub fn json(&self, args: &[&str]) -> Value {
        let out = run(self.command().arg("--json").args(args));
        assert_eq!(out.code, 0, "{args:?} on {:?}: {}", self.backend, out.stderr);
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
    }

    /// An object's raw bytes, read around bootlace.
    pub fn object(&self, key: &str) -> Option<Vec<u8>> {
        match (self.backend, self.server()) {
            (Backend::Gcs, _) => gcs::gcs().object(&self.place, key),
            (_, None) => std::fs::read(self.dir.path().join("store").join(key)).ok(),
            (_, Some(server)) => server.object(&self.place, key),
        }
    }

    pub fn object_json(&self, key: &str) -> Value {
        serde_json::from_slice(&self.object(key).unwrap_or_else(|| panic!("{key} missing"))).unwrap()
    }

    /// A small release tree with a marker file, so different trees differ.
    pub fn tree(&self, name: &str, marker: &str) -> PathBuf {
        let root = self.dir.path().join(name);
        std::fs::create_dir_all(root.join("bootstrap/b/prod")).unwrap();
        std::fs::write(
            root.join("bootstrap/b/prod/bootstrapper.sh"),
            "#!/bin/sh\necho prod\n",
        )
        .unwrap();
        std::fs::write(root.join("marker"), marker).unwrap();
        std::os::unix::fs::symlink("bootstrap/b", root.join("init")).unwrap();
        root
    }
}

pub fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    keys
}

pub fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

impl Env {
    /// `bootlace` as instance `id` runs it: a file identity (prod, web, context b), a
    /// state dir of its own under the scratch dir, and this store.
    pub fn instance(&self, id: &str) -> Command {
        let home = self.dir.path().join(id);
        std::fs::create_dir_all(&home).unwrap();
        let user_data = format!("environment=prod\nrole=web\ncontext=b\nmachine_id={id}\n");
        let user_data = write(&home, "user-data", user_data);
        let mut command = self.command();
        command
            .env("BOOTLACE_IDENTITY", format!("file:{}", user_data.display()))
            .env("BOOTLACE_STATE_DIR", home.join("state"));
        command
    }
}

impl Backend {
    /// Why this store cannot take the cases that rest on conditional writes (create-only
    /// manifests, compare-and-swap pointers); `None` when it can.
    pub fn without_guards(self) -> Option<&'static str> {
        match self {
            Backend::Rclone => Some("rclone serve s3 ignores If-None-Match and If-Match"),
            Backend::File | Backend::Moto | Backend::Seaweed | Backend::Azurite | Backend::Gcs => None,
        }
    }
}
