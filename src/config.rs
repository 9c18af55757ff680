//! The config file (DESIGN §3): TOML, every key optional, unknown keys and bad values
//! rejected with the key named. Each table is its module's own section (its type,
//! defaults and value checks: `crate::deploy::Config` for `[deploy]`, …); this module
//! composes them, reads the file and checks what spans sections. Flags and
//! `BOOTLACE_*` variables are merged on top by [`crate::cli`].

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::units::Invalid;

/// Where the config file is read from when neither `--config` nor `BOOTLACE_CONFIG`
/// names one. An absent file here means "all defaults".
pub const DEFAULT_PATH: &str = "/etc/bootlace/config.toml";

/// A config file that cannot be read or does not hold a valid config (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("config {path}: {key}: {message} (line {line})")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
        line: usize,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub identity: crate::identity::Config,
    pub store: crate::store::Config,
    pub deploy: crate::deploy::Config,
    pub init: crate::init::Config,
    pub health: crate::health::Config,
    pub agent: crate::agent::config::Config,
    pub report: crate::report::Config,
    pub trust: crate::trust::Config,
    pub secrets: crate::secrets::Config,
}

impl Config {
    /// Reads the config at `path`. A missing file is an error only when the user named
    /// it (`explicit`); the default path may be absent.
    pub fn load(path: &Path, explicit: bool) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(Self::default()),
            Err(error) => Err(ConfigError::Read {
                path: path.to_owned(),
                error,
            }),
        }
    }

    /// Parses config text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let invalid = |key: String, err: toml::de::Error| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message: err.message().trim().to_owned(),
            line: err.span().map_or(1, |span| line_of(text, span.start)),
        };
        let document = toml::Deserializer::parse(text).map_err(|e| invalid("syntax".into(), e))?;
        let config: Config = serde_path_to_error::deserialize(document)
            .map_err(|e| invalid(e.path().to_string(), e.into_inner()))?;
        config.validate(path, text)?;
        Ok(config)
    }

    /// Each section's own checks, then those that span sections.
    fn validate(&self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let invalid = |refused: Invalid| ConfigError::Invalid {
            path: path.to_owned(),
            line: line_of_key(text, &refused.key),
            key: refused.key,
            message: refused.message,
        };
        // In the order the checks ran when config.rs held them all: the first refusal
        // a file with several is refused for stays the same.
        self.health.check().map_err(invalid)?;
        self.agent.check().map_err(invalid)?;
        if self.report.instance_tag
            && let Some(url) = &self.store.url
            && !url
                .split_once("://")
                .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("s3"))
        {
            return Err(invalid(Invalid::new(
                "report.instance_tag",
                "object tags are for s3:// stores (the IAM policy that reads them is AWS's)",
            )));
        }
        self.trust.check().map_err(invalid)?;
        self.identity.check().map_err(invalid)?;
        self.init.check().map_err(invalid)?;
        Ok(())
    }
}

/// The 1-based line where `key` (`health.url`, `trust.keys[1]`, `health`) is set in
/// `text`: its own line under its table's header, else the header; 1 when neither is
/// found (a value left at its default).
fn line_of_key(text: &str, key: &str) -> usize {
    let key = key.split('[').next().unwrap_or(key);
    let (table, leaf) = key.rsplit_once('.').unwrap_or((key, ""));
    let mut current = String::new();
    let mut header = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            current = name.trim().to_owned();
            if current == table {
                header.get_or_insert(i + 1);
            }
            continue;
        }
        let Some((name, _)) = line.split_once('=') else {
            continue;
        };
        let name = name.trim();
        if (current == table && name == leaf) || (current.is_empty() && name == key) {
            return i + 1;
        }
    }
    header.unwrap_or(1)
}

/// 1-based line number of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::deploy::fetch::Download;
    use crate::identity::SourceSpec;
    use crate::units::size;

    #[test]
    fn a_refused_value_names_its_line() {
        let text = "[store]\nurl = \"file:///x\"\n\n[health]\n# a comment\ntries = 0\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains("health.tries") && err.ends_with("(line 6)"), "{err}");
        let err = parse("[health]\ncommand = \"true\"\nurl = \"http://x/\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("(line 1)"), "{err}");
        let err = parse("[agent]\n\ninterval = \"1ms\"\n").unwrap_err().to_string();
        assert!(err.ends_with("(line 3)"), "{err}");
        assert_eq!(line_of_key("trust.keys = [\"x\"]\n", "trust.keys[0]"), 1);
        assert_eq!(
            line_of_key("\n[trust]\nkeys = [\"a\",\n\"b\"]\n", "trust.keys[1]"),
            3
        );
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(size::parse("64MiB"), Ok(64 << 20));
        assert_eq!(size::parse("1 GB"), Ok(1_000_000_000));
        assert_eq!(size::parse("4096"), Ok(4096));
        assert!(size::parse("lots").is_err());
        assert!(size::parse("99999999999GiB").is_err());
        let config = parse(
            "[deploy]\ndownload_window = \"16MiB\"\nmax_unpacked_bytes = 1000\ndownload = \"ranges\"\n",
        )
        .unwrap();
        assert_eq!(config.deploy.download_window, 16 << 20);
        assert_eq!(config.deploy.limits().max_unpacked_bytes, 1000);
        assert_eq!(config.deploy.download, Download::Ranges);
        assert!(
            parse("[deploy]\ndownload = \"fast\"\n")
                .unwrap_err()
                .to_string()
                .contains("deploy.download")
        );
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn of_several_refused_values_the_first_checked_is_named() {
        let text = "[identity]\nrequired = [\"Env\"]\n[health]\ntries = 0\n[trust]\nkeys = [\"x\"]\n";
        let Err(ConfigError::Invalid { key, .. }) = parse(text) else {
            panic!("refused");
        };
        assert_eq!(key, "health.tries");
        let text = "[identity]\nrequired = [\"Env\"]\n[trust]\nkeys = [\"x\"]\n";
        let Err(ConfigError::Invalid { key, .. }) = parse(text) else {
            panic!("refused");
        };
        assert_eq!(key, "trust.keys[0]");
    }

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config.identity.deadline, Duration::from_secs(120));
        assert_eq!(config.identity.source, SourceSpec::Imds);
        assert!(!config.identity.imds_v1_fallback);
        assert_eq!(config.store.deadline, Duration::from_secs(60));
        assert_eq!(config.deploy.state_dir, Path::new("/var/lib/bootlace"));
        assert_eq!(config.deploy.keep, 5);
        assert_eq!(config.init.candidates.len(), 3);
        assert_eq!(config.init.timeout, Duration::from_secs(600));
        assert!(config.report.upload);
    }

    #[test]
    fn the_design_example_parses() {
        let text = r#"
[identity]
source = "file:/etc/bootlace/user-data"
imds_v1_fallback = true
deadline = "30s"
required = ["environment", "role"]

[store]
url = "s3://my-builds/app"
endpoint = "http://127.0.0.1:9000"
region = "us-east-1"
deadline = "1m"

[deploy]
state_dir = "/srv/bootlace"
pointer = "{environment}-{role}"
keep = 2

[init]
root = "{release}/init"
candidates = ["{context}/x.sh"]
timeout = "90s"

[report]
upload = false
"#;
        let config = parse(text).unwrap();
        assert_eq!(
            config.identity.source,
            SourceSpec::File("/etc/bootlace/user-data".into())
        );
        assert_eq!(config.identity.deadline, Duration::from_secs(30));
        assert_eq!(config.store.deadline, Duration::from_secs(60));
        assert_eq!(config.init.timeout, Duration::from_secs(90));
        assert_eq!(config.deploy.keep, 2);
        assert!(!config.report.upload);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse("[identity]\ndeadlin = \"5s\"\n").unwrap_err().to_string();
        assert!(err.contains("deadlin"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn bad_duration_names_the_key_and_line() {
        let err = parse("[store]\n\ndeadline = \"soon\"\n").unwrap_err().to_string();
        assert!(err.contains("store.deadline"), "{err}");
        assert!(err.contains("invalid duration `soon`"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let err = parse("[deploy]\nkeep = \"five\"\n").unwrap_err().to_string();
        assert!(err.contains("deploy.keep"), "{err}");
    }

    #[test]
    fn bad_identity_source_names_the_key() {
        let err = parse("[identity]\nsource = \"dns\"\n").unwrap_err().to_string();
        assert!(err.contains("identity.source"), "{err}");
        assert!(err.contains("file:PATH"), "{err}");
    }

    #[test]
    fn required_keys_must_be_user_data_keys() {
        let err = parse("[identity]\nrequired = [\"Env\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("identity.required"), "{err}");
    }

    #[test]
    fn syntax_error_is_one_line() {
        let err = parse("[identity\n").unwrap_err().to_string();
        assert!(!err.contains('\n'), "{err}");
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn missing_default_file_is_defaults_but_missing_named_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.toml");
        assert!(Config::load(&path, false).is_ok());
        assert!(matches!(Config::load(&path, true), Err(ConfigError::Read { .. })));
    }

    /// `dist/config.toml`, the package's conffile, is every key the config types take,
    /// each with its default: uncommented, it parses to `Config::default()`.
    #[test]
    fn the_packaged_config_is_every_key_with_its_default() {
        let text = include_str!("../dist/config.toml");
        let is_key = |line: &str| {
            line.split_once(" = ").is_some_and(|(key, _)| {
                !key.is_empty()
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            })
        };
        let uncommented: Vec<&str> = text
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest) if is_key(rest) => rest,
                _ => line,
            })
            .collect();
        let uncommented = uncommented.join("\n");
        let parsed = Config::parse(&uncommented, Path::new("dist/config.toml")).unwrap();
        assert_eq!(format!("{parsed:?}"), format!("{:?}", Config::default()));
        // The keys each section takes, as the parser lists them for an unknown one.
        let expected = |prefix: &str| -> Vec<String> {
            let err = Config::parse(&format!("{prefix}zz_no_such_key = 1\n"), Path::new("x")).unwrap_err();
            let message = err.to_string();
            let (_, listed) = message.split_once("expected").expect("the parser names the keys");
            listed.split('`').skip(1).step_by(2).map(str::to_owned).collect()
        };
        let file: toml::Table = toml::from_str(&uncommented).unwrap();
        let mut sections: Vec<&String> = file.keys().collect();
        sections.sort();
        let mut wanted = expected("");
        wanted.sort();
        assert_eq!(sections, wanted.iter().collect::<Vec<_>>());
        for section in wanted {
            let mut keys: Vec<&String> = file[&section].as_table().unwrap().keys().collect();
            keys.sort();
            let mut want = expected(&format!("[{section}]\n"));
            want.sort();
            assert_eq!(keys, want.iter().collect::<Vec<_>>(), "[{section}]");
        }
    }
}
