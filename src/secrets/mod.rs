//! Secrets at boot (DESIGN §6.6): each `[secrets.items]` entry names a value in SSM
//! Parameter Store (`ssm:NAME`, decrypted) or Secrets Manager (`secretsmanager:ID`),
//! with identity templates. They are fetched after identity and before init, with the
//! user-data keys or the standard credential chain (the instance role), and each is
//! written atomically to a file of its own in `secrets.dir`: a tmpfs, the dir 0700,
//! each file 0400. Files of names no longer configured are removed. Init gets
//! `BOOTLACE_SECRETS_DIR`.
//!
//! Values live in [`Secret`]s, whose `Debug` prints the name only and whose bytes
//! leave only through [`write`] and [`Fetched::scrub`]: bootlace's own log lines,
//! errors, reports and `--json` output cannot hold one. What init and the health check
//! print can; the run scrubs it before its report, its log lines and its record of a
//! failed release keep it. The report lists the names fetched.

mod aws;

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Instant;

use secrecy::{ExposeSecret, SecretSlice};
use serde::Deserialize;

use crate::config::SecretsConfig;
use crate::exit::BadInput;
use crate::identity::Identity;

pub use aws::unanswered;

/// An item's name, which is also its file name: `[A-Za-z0-9][A-Za-z0-9._-]*`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct Name(String);

impl TryFrom<String> for Name {
    type Error = String;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        crate::identity::userdata::check_name(&name)
            .map_err(|why| format!("secret name {name:?} is not a file name: {why}"))?;
        Ok(Self(name))
    }
}

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a value lives, before its templates are filled.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Source {
    pub service: Service,
    pub template: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// SSM Parameter Store, `GetParameter` with decryption.
    Ssm,
    /// Secrets Manager, `GetSecretValue` of the current version.
    SecretsManager,
}

impl Service {
    fn prefix(self) -> &'static str {
        match self {
            Self::Ssm => "ssm",
            Self::SecretsManager => "secretsmanager",
        }
    }
}

impl TryFrom<String> for Source {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let (service, template) = match text.split_once(':') {
            Some(("ssm", rest)) => (Service::Ssm, rest),
            Some(("secretsmanager", rest)) => (Service::SecretsManager, rest),
            _ => {
                return Err(format!(
                    "expected `ssm:NAME` or `secretsmanager:ID`, got `{text}`"
                ));
            }
        };
        if template.trim().is_empty() || template.chars().any(char::is_control) {
            return Err(format!("`{text}` names no parameter or secret"));
        }
        Ok(Self {
            service,
            template: template.to_owned(),
        })
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.service.prefix(), self.template)
    }
}

/// One item with its templates filled: what would be fetched, and from where.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Planned {
    pub name: String,
    /// `ssm:/prod/web/db_password`: the source as it is asked for.
    pub source: String,
    #[serde(skip)]
    service: Service,
    #[serde(skip)]
    id: String,
}

/// The items for this identity, templates filled (a placeholder user-data does not
/// give is bad input, naming the item).
pub fn plan(config: &SecretsConfig, identity: &Identity) -> Result<Vec<Planned>, BadInput> {
    config
        .items
        .iter()
        .map(|(name, source)| {
            let id = identity.fill(&source.template, &format!("secrets.items.{}", name.0))?;
            Ok(Planned {
                name: name.0.clone(),
                source: format!("{}:{id}", source.service.prefix()),
                service: source.service,
                id,
            })
        })
        .collect()
}

/// A fetched value. Its bytes are reachable only through [`write`].
pub struct Secret {
    name: String,
    value: SecretSlice<u8>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({}, redacted)", self.name)
    }
}

/// The values of one fetch, in item order.
#[derive(Debug, Default)]
pub struct Fetched {
    secrets: Vec<Secret>,
    /// How long the fetch took.
    pub elapsed_ms: u64,
}

impl Fetched {
    pub fn names(&self) -> Vec<String> {
        self.secrets.iter().map(|s| s.name.clone()).collect()
    }

    /// `text` with every value of at least [`MIN_SCRUBBED`] bytes that occurs in it
    /// replaced by `[secret NAME]`: for the output an init script or health check
    /// printed, which the report keeps.
    pub fn scrub(&self, text: &str) -> String {
        // Each text value, and the same without trailing whitespace (as `$(cat …)`
        // prints it); longest first, so that a value holding another goes whole.
        let mut values: Vec<(&str, &str)> = Vec::new();
        for secret in &self.secrets {
            if let Ok(value) = std::str::from_utf8(secret.value.expose_secret()) {
                values.push((value, &secret.name));
                values.push((value.trim_end(), &secret.name));
            }
        }
        values.retain(|(value, _)| value.len() >= MIN_SCRUBBED);
        values.sort_by_key(|(value, _)| std::cmp::Reverse(value.len()));
        let mut text = text.to_owned();
        for (value, name) in values {
            if text.contains(value) {
                text = text.replace(value, &format!("[secret {name}]"));
            }
        }
        text
    }
}

/// Values shorter than this are not scrubbed from output: they would match ordinary
/// words.
const MIN_SCRUBBED: usize = 4;

/// Fetches every item, all or nothing, within `secrets.deadline`. The first failure
/// names its item and source.
pub async fn fetch(config: &SecretsConfig, identity: &Identity) -> anyhow::Result<Fetched> {
    let planned = plan(config, identity)?;
    if planned.is_empty() {
        return Ok(Fetched::default());
    }
    let started = Instant::now();
    let deadline = started + config.deadline;
    let fetching = async {
        let client = aws::Client::new(config, identity).await?;
        let of = |service: Service| -> Vec<&str> {
            let ids = planned.iter().filter(|p| p.service == service);
            ids.map(|p| p.id.as_str()).collect()
        };
        let (ssm, ssm_ids) = (Service::Ssm, of(Service::Ssm));
        let (manager, manager_ids) = (Service::SecretsManager, of(Service::SecretsManager));
        let (ssm_values, manager_values) = tokio::join!(
            client.get_all(ssm, &ssm_ids, deadline),
            client.get_all(manager, &manager_ids, deadline)
        );
        let (mut ssm_values, mut manager_values) = (ssm_values.into_iter(), manager_values.into_iter());
        // Back in item order; the first failure names its item.
        planned
            .iter()
            .map(|item| {
                let value = match item.service {
                    Service::Ssm => ssm_values.next(),
                    Service::SecretsManager => manager_values.next(),
                };
                let value = value.unwrap_or_else(|| Err(anyhow::anyhow!("no answer")));
                let value =
                    value.map_err(|err| err.context(format!("secret {} ({})", item.name, item.source)))?;
                anyhow::Ok(Secret {
                    name: item.name.clone(),
                    value,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()
    };
    // Each call stops retrying at the deadline; this bounds whatever else could wait.
    let secrets = tokio::time::timeout(config.deadline + CUT_OFF_MARGIN, fetching)
        .await
        .unwrap_or_else(|_| {
            Err(aws::CallError::unanswered(format!(
                "fetching secrets: not finished after {} (secrets.deadline)",
                humantime::format_duration(config.deadline)
            ))
            .into())
        })?;
    Ok(Fetched {
        secrets,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

const CUT_OFF_MARGIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Writes every value to `dir/<name>` (0400) by rename, so that a reader sees the old
/// value or the new one, never a part; makes `dir` 0700; removes files of names no
/// longer configured (and temporary files a crash left).
pub fn write(config: &SecretsConfig, fetched: &Fetched) -> anyhow::Result<()> {
    let dir = &config.dir;
    prepare_dir(config)?;
    let on_disk = !config.require_tmpfs && !is_memory(dir)?;
    for secret in &fetched.secrets {
        let path = dir.join(&secret.name);
        let temporary = dir.join(format!(".{}.tmp-{}", secret.name, std::process::id()));
        let written = (|| {
            let _ = std::fs::remove_file(&temporary);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o400)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&temporary)?;
            file.write_all(secret.value.expose_secret())?;
            if on_disk {
                file.sync_all()?;
            }
            std::fs::rename(&temporary, &path)
        })();
        if let Err(err) = written {
            let _ = std::fs::remove_file(&temporary);
            anyhow::bail!("writing secret {} to {}: {err}", secret.name, path.display());
        }
    }
    remove_stale(config)
}

/// With no items configured: the files an earlier config left in `dir` are removed.
pub fn clear(config: &SecretsConfig) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(&config.dir) {
        Ok(meta) if meta.is_dir() => remove_stale(config),
        _ => Ok(()),
    }
}

/// The names configured (whatever was fetched): every other file in `dir` goes.
fn remove_stale(config: &SecretsConfig) -> anyhow::Result<()> {
    let dir = &config.dir;
    let entries = std::fs::read_dir(dir).map_err(|e| anyhow::anyhow!("reading {}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if config.items.keys().any(|n| n.0 == name) {
            continue;
        }
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir {
            tracing::warn!(
                "{}: a directory, not a secret bootlace wrote: left alone",
                entry.path().display()
            );
            continue;
        }
        if let Err(err) = std::fs::remove_file(entry.path()) {
            anyhow::bail!("removing stale secret {}: {err}", entry.path().display());
        }
        if !name.starts_with('.') {
            tracing::info!("removed secret {name}: no longer configured");
        }
    }
    Ok(())
}

/// Creates `dir` (0700) when missing, refuses it when it is not on tmpfs or ramfs
/// (unless `require_tmpfs = false`), and makes it 0700.
fn prepare_dir(config: &SecretsConfig) -> anyhow::Result<()> {
    let dir = &config.dir;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| anyhow::anyhow!("creating secrets dir {}: {e}", dir.display()))?;
    let meta =
        std::fs::symlink_metadata(dir).map_err(|e| anyhow::anyhow!("secrets dir {}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(BadInput(format!("secrets.dir {}: not a directory", dir.display())).into());
    }
    // Whoever owns the dir could replace a file before init reads it.
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if std::os::unix::fs::MetadataExt::uid(&meta) != euid {
        return Err(BadInput(format!(
            "secrets.dir {}: owned by uid {}, not by the user bootlace runs as ({euid})",
            dir.display(),
            std::os::unix::fs::MetadataExt::uid(&meta)
        ))
        .into());
    }
    if config.require_tmpfs && !is_memory(dir)? {
        return Err(BadInput(format!(
            "secrets.dir {}: not on tmpfs or ramfs, so secrets would outlive the machine on its disk \
             (point it at a tmpfs such as /run, or set secrets.require_tmpfs = false)",
            dir.display()
        ))
        .into());
    }
    if meta.permissions().mode() & 0o777 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| anyhow::anyhow!("making secrets dir {} 0700: {e}", dir.display()))?;
    }
    Ok(())
}

/// `secrets.dir` as `plan` shows it: the path, and whether a run would accept it.
pub fn dir_note(config: &SecretsConfig) -> String {
    let dir = &config.dir;
    // A dir not made yet is made on the filesystem of its nearest existing parent.
    let existing = dir.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    let verdict = match (is_memory(existing), config.require_tmpfs) {
        (Ok(true), _) => "tmpfs",
        (Ok(false), true) => "not on tmpfs: a run would refuse it",
        (Ok(false), false) => "on disk, allowed by secrets.require_tmpfs = false",
        (Err(_), _) => "unreadable",
    };
    format!("{} ({verdict})", dir.display())
}

/// Whether `path` is on a filesystem held in memory only (tmpfs, ramfs).
pub fn is_memory(path: &Path) -> anyhow::Result<bool> {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6_u32 as i64;
    let text = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| BadInput(format!("secrets.dir {}: holds a NUL byte", path.display())))?;
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a statfs buffer of the right size.
    if unsafe { libc::statfs(text.as_ptr(), &mut stat) } != 0 {
        let err = std::io::Error::last_os_error();
        anyhow::bail!("secrets dir {}: {err}", path.display());
    }
    // `f_type` is a signed word whose width varies by architecture.
    #[allow(clippy::unnecessary_cast)]
    let kind = stat.f_type as i64 & 0xffff_ffff;
    Ok(kind == TMPFS_MAGIC || kind == RAMFS_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_or_say_what_they_expect() {
        let source = Source::try_from("ssm:/{environment}/db".to_owned()).unwrap();
        assert_eq!(source.service, Service::Ssm);
        assert_eq!(source.to_string(), "ssm:/{environment}/db");
        let source = Source::try_from("secretsmanager:prod/api".to_owned()).unwrap();
        assert_eq!(source.service, Service::SecretsManager);
        for bad in ["vault:x", "ssm:", "ssm", "/x", "secretsmanager: ", "ssm:a\nb"] {
            assert!(Source::try_from(bad.to_owned()).is_err(), "{bad}");
        }
        assert!(Name::try_from("db_password".to_owned()).is_ok());
        for bad in ["../x", "a/b", ".hidden", "", "a b"] {
            assert!(Name::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }

    #[test]
    fn scrub_replaces_values_of_four_bytes_or_more() {
        let fetched = Fetched {
            secrets: vec![
                Secret {
                    name: "db".into(),
                    value: b"hunter22".to_vec().into(),
                },
                Secret {
                    name: "short".into(),
                    value: b"abc".to_vec().into(),
                },
            ],
            elapsed_ms: 0,
        };
        assert_eq!(fetched.scrub("password hunter22 abc"), "password [secret db] abc");
        assert!(!format!("{fetched:?}").contains("hunter22"));
    }

    #[test]
    fn dev_shm_is_memory_and_proc_is_not() {
        assert!(is_memory(Path::new("/dev/shm")).unwrap());
        assert!(!is_memory(Path::new("/proc")).unwrap());
    }
}
