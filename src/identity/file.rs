//! `file:PATH` identity: a user-data file, as on a NoCloud seed. The machine id comes
//! from a `machine_id=` line, else `/etc/machine-id`; placement facts stay unknown.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{IdentitySource, InstanceFacts, userdata};
use crate::error::BadInput;

const MACHINE_ID_FILE: &str = "/etc/machine-id";

pub struct FileSource {
    path: PathBuf,
}

impl FileSource {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
        }
    }
}

impl IdentitySource for FileSource {
    fn describe(&self) -> String {
        format!("user-data file {}", self.path.display())
    }

    async fn facts(&mut self) -> anyhow::Result<InstanceFacts> {
        let read = || -> std::io::Result<Vec<u8>> {
            // Opened without blocking and checked before any read: a FIFO or a device
            // would otherwise hold the boot for as long as nothing writes to it.
            let file = std::fs::File::options()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&self.path)?;
            let kind = file.metadata()?.file_type();
            if !kind.is_file() {
                return Err(std::io::Error::other(format!(
                    "not a regular file (a {})",
                    kind_name(kind)
                )));
            }
            let mut bytes = Vec::new();
            // One byte past the limit is enough for the parser to say "too large".
            file.take(userdata::MAX_BYTES as u64 + 1)
                .read_to_end(&mut bytes)?;
            Ok(bytes)
        };
        let bytes = read().map_err(|e| BadInput(format!("reading {}: {e}", self.describe())))?;
        Ok(InstanceFacts {
            user_data: Some(bytes),
            ..InstanceFacts::default()
        })
    }

    fn fallback_machine_id(&self) -> anyhow::Result<Option<String>> {
        match std::fs::read_to_string(MACHINE_ID_FILE) {
            Ok(text) if !text.trim().is_empty() => Ok(Some(text.trim().to_owned())),
            Ok(_) => Ok(None),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(anyhow::anyhow!("reading {MACHINE_ID_FILE}: {err}")),
        }
    }
}

fn kind_name(kind: std::fs::FileType) -> &'static str {
    if kind.is_dir() {
        "directory"
    } else if kind.is_fifo() {
        "FIFO"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_char_device() || kind.is_block_device() {
        "device"
    } else {
        "special file"
    }
}
