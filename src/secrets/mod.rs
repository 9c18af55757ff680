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

mod answers;
mod aws;
mod dir;

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretSlice};
use serde::Deserialize;

use crate::error::BadInput;
use crate::identity::Identity;

pub use aws::unanswered;
pub use dir::{clear, dir_note, is_memory, write};

/// `[secrets]` (DESIGN §6.6): values fetched at boot from SSM Parameter Store and
/// Secrets Manager into files under `dir`, one per item, for the init script.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// On tmpfs or ramfs (checked, unless `require_tmpfs = false`); made 0700.
    pub dir: PathBuf,
    /// Refuse a `dir` whose filesystem keeps what is written after power-off.
    pub require_tmpfs: bool,
    /// The AWS region of both services; unset: the identity's region, then
    /// `AWS_REGION`, then `AWS_DEFAULT_REGION`.
    #[serde(deserialize_with = "crate::units::empty_as_none")]
    pub region: Option<String>,
    /// How long fetching all of them may take, retries of throttled calls included.
    #[serde(with = "crate::units::duration")]
    pub deadline: Duration,
    /// File name → `ssm:NAME` or `secretsmanager:ID`, with identity templates.
    pub items: std::collections::BTreeMap<Name, Source>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/run/bootlace/secrets"),
            require_tmpfs: true,
            region: None,
            deadline: Duration::from_secs(60),
            items: Default::default(),
        }
    }
}

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
pub fn plan(config: &Config, identity: &Identity) -> Result<Vec<Planned>, BadInput> {
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

    /// `text` with every secret replaced by `[secret NAME]`: for the output an init
    /// script or health check printed, which the report keeps. Not only whole values:
    /// each line of a multi-line value, each string (and number) inside a JSON value,
    /// and the base64 of each, since a script may print any of them. A piece of
    /// [`MIN_ANYWHERE`] bytes or more is replaced wherever it occurs; a shorter one (of
    /// at least [`MIN_SCRUBBED`]) only as a whole word, so that a short value that is
    /// also a common word does not eat into unrelated output.
    pub fn scrub(&self, text: &str) -> String {
        let mut pieces: Vec<(String, &str)> = Vec::new();
        for secret in &self.secrets {
            for piece in pieces_of(secret.value.expose_secret()) {
                pieces.push((piece, &secret.name));
            }
        }
        pieces.retain(|(piece, _)| piece.len() >= MIN_SCRUBBED);
        // Longest first, so that a value holding another goes whole.
        pieces.sort_by_key(|(piece, _)| std::cmp::Reverse(piece.len()));
        pieces.dedup_by(|a, b| a.0 == b.0);
        let mut text = text.to_owned();
        for (piece, name) in pieces {
            let mark = format!("[secret {name}]");
            text = match piece.len() >= MIN_ANYWHERE {
                true if text.contains(piece.as_str()) => text.replace(piece.as_str(), &mark),
                true => text,
                false => replace_words(&text, &piece, &mark),
            };
        }
        text
    }
}

/// The texts a value may be printed as: itself and trimmed, its lines, the strings and
/// numbers inside it when it is JSON, and the base64 (standard and URL-safe, padded or
/// not) of the whole.
fn pieces_of(value: &[u8]) -> Vec<String> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let mut pieces = Vec::new();
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        pieces.push(engine.encode(value));
        pieces.push(engine.encode(value.trim_ascii_end()));
    }
    let Ok(text) = std::str::from_utf8(value) else {
        return pieces;
    };
    pieces.push(text.to_owned());
    pieces.push(text.trim_end().to_owned());
    pieces.extend(text.lines().map(|line| line.trim().to_owned()));
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(text) {
        let mut stack = vec![json];
        while let Some(value) = stack.pop() {
            match value {
                serde_json::Value::String(s) => pieces.push(s),
                serde_json::Value::Number(n) => pieces.push(n.to_string()),
                serde_json::Value::Array(items) => stack.extend(items),
                serde_json::Value::Object(fields) => stack.extend(fields.into_iter().map(|(_, v)| v)),
                _ => {}
            }
        }
    }
    pieces
}

/// `text` with `word` replaced by `mark` where it stands as a word of its own (no
/// letter, digit or `_` on either side).
fn replace_words(text: &str, word: &str, mark: &str) -> String {
    let is_word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(word) {
        let before = out.chars().next_back().or_else(|| rest[..at].chars().next_back());
        let before = if at > 0 {
            rest[..at].chars().next_back()
        } else {
            before
        };
        let after = rest[at + word.len()..].chars().next();
        out.push_str(&rest[..at]);
        if is_word(before) || is_word(after) {
            out.push_str(word);
        } else {
            out.push_str(mark);
        }
        rest = &rest[at + word.len()..];
    }
    out.push_str(rest);
    out
}

/// Pieces shorter than this are not scrubbed from output at all: they would match
/// ordinary words and numbers.
const MIN_SCRUBBED: usize = 4;
/// Pieces at least this long are scrubbed wherever they occur; shorter ones only as
/// whole words.
const MIN_ANYWHERE: usize = 8;

/// Fetches every item, all or nothing, within `secrets.deadline`. The first failure
/// names its item and source.
pub async fn fetch(config: &Config, identity: &Identity) -> anyhow::Result<Fetched> {
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
            Err(answers::CallError::unanswered(format!(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fetched(items: &[(&str, &str)]) -> Fetched {
        Fetched {
            secrets: items
                .iter()
                .map(|(name, value)| Secret {
                    name: (*name).to_owned(),
                    value: SecretSlice::from(value.as_bytes().to_vec()),
                })
                .collect(),
            elapsed_ms: 0,
        }
    }

    #[test]
    fn scrubbing_catches_fields_lines_and_base64_but_spares_words() {
        use base64::Engine;
        let json = r#"{"user": "admin-user-1", "password": "correct-horse-9"}"#;
        let multi = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END KEY-----\n";
        let f = fetched(&[("db", json), ("key", multi), ("pin", "test")]);
        let out = f.scrub("user admin-user-1 password correct-horse-9");
        assert!(
            !out.contains("admin-user-1") && !out.contains("correct-horse-9"),
            "{out}"
        );
        let out = f.scrub("line MIIEvQIBADANBgkqhkiG9w0BAQEFAASC");
        assert!(!out.contains("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"), "{out}");
        let encoded = base64::engine::general_purpose::STANDARD.encode(json);
        assert!(!f.scrub(&format!("echo {encoded}")).contains(&encoded));
        // A short value only as a word of its own: "testing" and "latest" stay.
        assert_eq!(
            f.scrub("testing the latest: test"),
            "testing the latest: [secret pin]"
        );
    }

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
        assert!(is_memory(std::path::Path::new("/dev/shm")).unwrap());
        assert!(!is_memory(std::path::Path::new("/proc")).unwrap());
    }
}
