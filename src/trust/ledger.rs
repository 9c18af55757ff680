//! `<state_dir>/trust.json`, the instance's memory of what it accepted: for each
//! pointer the highest serial, its digest and signer, and the manifests verified
//! lately. Read and written under its own lock, replaced whole.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Refused, Rule, refused};

/// The file under the state dir that remembers the pointers accepted.
pub const LEDGER_FILE: &str = "trust.json";

/// `trust.json`: for each pointer name, the highest serial accepted, the digest of
/// its bytes and the key that signed them; and the manifests verified lately.
pub(super) struct Ledger<'a>(pub(super) &'a Path);

/// Manifests remembered as verified: enough for the releases an instance keeps.
pub(super) const MANIFESTS_KEPT: usize = 64;

#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct LedgerFile {
    pub(super) format_version: u32,
    #[serde(default)]
    pub(super) pointers: BTreeMap<String, Seen>,
    #[serde(default)]
    pub(super) manifests: BTreeMap<String, Seen>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Seen {
    /// A pointer's serial (0 for a manifest).
    #[serde(default)]
    pub(super) serial: u64,
    /// The sha256 of the object's bytes.
    pub(super) sha256: String,
    /// The key id that verified them.
    pub(super) key_id: String,
    pub(super) accepted_at: String,
}

impl Seen {
    pub(super) fn new(serial: u64, digest: &str, key_id: &str) -> Seen {
        Seen {
            serial,
            sha256: digest.to_owned(),
            key_id: key_id.to_owned(),
            accepted_at: crate::release::now(),
        }
    }

    /// The rollback rule: `serial` is not below the one accepted, and an equal one
    /// comes with the same bytes.
    pub(super) fn check(&self, serial: u64, digest: &str) -> Result<(), Refused> {
        if serial < self.serial {
            return Err(refused(
                Rule::Serial,
                format!(
                    "serial {serial} is lower than {}, accepted at {}: an older pointer replayed?",
                    self.serial, self.accepted_at
                ),
            ));
        }
        if serial == self.serial && digest != self.sha256 {
            return Err(refused(
                Rule::Serial,
                format!("serial {serial} was accepted before with other bytes"),
            ));
        }
        Ok(())
    }
}

impl Ledger<'_> {
    pub(super) fn read(&self) -> Result<LedgerFile, Refused> {
        let broken = |why: String| {
            refused(
                Rule::Ledger,
                format!(
                    "{}: {why} (remove it to accept pointers from scratch)",
                    self.0.display()
                ),
            )
        };
        let bytes = match std::fs::read(self.0) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(LedgerFile::default()),
            Err(err) => return Err(broken(err.to_string())),
        };
        if bytes.len() > 1 << 20 {
            return Err(broken("over 1 MiB".into()));
        }
        serde_json::from_slice(&bytes).map_err(|e| broken(e.to_string()))
    }

    /// Applies `change` to the file as it is now, under a lock, and writes it
    /// atomically.
    pub(super) fn record(&self, change: impl FnOnce(&mut LedgerFile)) -> Result<(), Refused> {
        let failed = |e: std::io::Error| refused(Rule::Ledger, format!("writing {}: {e}", self.0.display()));
        let lock = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.0.with_extension("lock"))
            .map_err(failed)?;
        // Held by other bootlace processes for a moment at most: waited for a bounded time.
        let mut tries = 0;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(refused(
                        Rule::Ledger,
                        format!(
                            "{} stayed locked for 2 s",
                            self.0.with_extension("lock").display()
                        ),
                    ));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(failed(e)),
            }
        }
        let mut file = self.read()?;
        change(&mut file);
        file.format_version = 1;
        let mut bytes = serde_json::to_vec_pretty(&file).expect("the ledger always serialises");
        bytes.push(b'\n');
        crate::files::write_atomic(self.0, &bytes, 0o600).map_err(failed)
    }
}
