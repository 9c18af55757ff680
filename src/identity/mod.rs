//! Who this instance is: `machine_id`, placement, and the user-data keys
//! (`environment`, `role`, `context`, extras). Sources implement [`IdentitySource`];
//! [`resolve`] picks one with a single `match` and applies the rules every source shares.

pub mod file;
pub mod imds;
pub mod userdata;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::error::BadInput;
use userdata::{Credentials, UserData};

/// `[identity]`: where the identity comes from, and what it must hold.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub source: SourceSpec,
    pub imds_v1_fallback: bool,
    #[serde(with = "crate::units::duration")]
    pub deadline: Duration,
    pub required: Vec<String>,
}

impl Config {
    /// `required` names user-data keys.
    pub fn check(&self) -> Result<(), crate::units::Invalid> {
        match self.required.iter().find(|key| !userdata::is_valid_key(key)) {
            Some(key) => Err(crate::units::Invalid::new(
                "identity.required",
                format!("`{key}` is not a user-data key ([a-z][a-z0-9_]*)"),
            )),
            None => Ok(()),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            source: SourceSpec::Imds,
            imds_v1_fallback: false,
            deadline: Duration::from_secs(120),
            required: ["environment", "role", "context"].map(String::from).to_vec(),
        }
    }
}

/// Which identity source to use: `imds` or `file:PATH`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum SourceSpec {
    Imds,
    File(PathBuf),
}

impl FromStr for SourceSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once(':') {
            _ if text == "imds" => Ok(Self::Imds),
            Some(("file", path)) if !path.is_empty() => Ok(Self::File(path.into())),
            _ => Err(format!("expected `imds` or `file:PATH`, got `{text}`")),
        }
    }
}

impl TryFrom<String> for SourceSpec {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

/// What a source knows before user-data is parsed.
#[derive(Debug, Default)]
pub struct InstanceFacts {
    pub machine_id: Option<String>,
    pub region: Option<String>,
    pub availability_zone: Option<String>,
    pub instance_type: Option<String>,
    /// Raw user-data; `None` when the instance has none.
    pub user_data: Option<Vec<u8>>,
}

/// A place an instance learns its identity from.
pub trait IdentitySource {
    /// Names the source in messages ("IMDS at http://…", "file /etc/…").
    fn describe(&self) -> String;

    /// Fetches the facts. Errors already say what was tried and why it failed.
    fn facts(&mut self) -> impl Future<Output = anyhow::Result<InstanceFacts>>;

    /// The machine id when neither the source nor user-data gives one.
    fn fallback_machine_id(&self) -> anyhow::Result<Option<String>> {
        Ok(None)
    }
}

/// The resolved identity. Serialises to exactly the JSON of DESIGN §2; the credentials
/// are skipped (and their type could not be serialised anyway).
#[derive(Debug, Serialize)]
pub struct Identity {
    pub machine_id: String,
    pub region: Option<String>,
    pub availability_zone: Option<String>,
    pub instance_type: Option<String>,
    pub environment: Option<String>,
    pub role: Option<String>,
    pub context: Option<String>,
    pub extra: BTreeMap<String, String>,
    #[serde(skip)]
    pub credentials: Option<Credentials>,
}

/// Resolves the identity from `source`, within `config.deadline`.
/// Every source is bounded by the deadline: those that retry stop at it with their own
/// reason, and whatever else hangs is cut off just after it.
pub async fn resolve(config: &Config, source: &SourceSpec) -> anyhow::Result<Identity> {
    let deadline = Instant::now() + config.deadline;
    let resolving = async {
        match source {
            SourceSpec::Imds => {
                let mut imds = imds::ImdsSource::from_env(config.imds_v1_fallback, deadline)?;
                from_source(&mut imds, &config.required).await
            }
            SourceSpec::File(path) => from_source(&mut file::FileSource::new(path), &config.required).await,
        }
    };
    let cut_off = tokio::time::Instant::from_std(deadline) + CUT_OFF_MARGIN;
    tokio::time::timeout_at(cut_off, resolving)
        .await
        .unwrap_or_else(|_| {
            anyhow::bail!(
                "no identity within {} (identity.deadline)",
                humantime::format_duration(config.deadline)
            )
        })
}

/// How long after the deadline a source that has not stopped by itself is cut off.
const CUT_OFF_MARGIN: std::time::Duration = std::time::Duration::from_secs(1);

async fn from_source(source: &mut impl IdentitySource, required: &[String]) -> anyhow::Result<Identity> {
    let facts = source.facts().await?;
    let parsing = || format!("parsing user-data from {}", source.describe());
    let mut user_data = match &facts.user_data {
        Some(raw) => userdata::parse(raw)
            .map_err(crate::error::user_input)
            .with_context(parsing)?,
        None => UserData::default(),
    };
    user_data
        .require(required)
        .map_err(crate::error::user_input)
        .with_context(|| match facts.user_data {
            Some(_) => parsing(),
            None => format!("{} has no user-data", source.describe()),
        })?;
    let from_user_data = user_data.take("machine_id");
    let machine_id = match (facts.machine_id, from_user_data) {
        (Some(id), from_user_data) => {
            if from_user_data.is_some_and(|other| other != id) {
                tracing::warn!(
                    "ignoring machine_id in user-data: {} gives the machine id",
                    source.describe()
                );
            }
            checked_machine_id(id, source)?
        }
        (None, Some(id)) => id,
        (None, None) => match source.fallback_machine_id()? {
            Some(id) => checked_machine_id(id, source)?,
            None => {
                let why = format!(
                    "{} gives no machine id: add a machine_id= line",
                    source.describe()
                );
                return Err(BadInput(why).into());
            }
        },
    };
    let credentials = user_data.credentials.take();
    let environment = user_data.take("environment");
    let role = user_data.take("role");
    let context = user_data.take("context");
    Ok(Identity {
        machine_id,
        region: facts.region,
        availability_zone: facts.availability_zone,
        instance_type: facts.instance_type,
        environment,
        role,
        context,
        extra: user_data.into_values(),
        credentials,
    })
}

/// A machine id from outside user-data still becomes a path component: same rule.
fn checked_machine_id(id: String, source: &impl IdentitySource) -> anyhow::Result<String> {
    match userdata::check_name(&id) {
        Ok(()) => Ok(id),
        Err(why) => anyhow::bail!(
            "{} gives machine id {id:?}, which is not a valid name: {why}",
            source.describe()
        ),
    }
}

impl Identity {
    /// `template` with `{environment}`, `{role}`, `{context}` and `{machine_id}` filled
    /// in; `setting` names the template in errors.
    pub fn fill(&self, template: &str, setting: &str) -> Result<String, BadInput> {
        let fields = [
            ("{environment}", self.environment.as_deref()),
            ("{role}", self.role.as_deref()),
            ("{context}", self.context.as_deref()),
            ("{machine_id}", Some(self.machine_id.as_str())),
        ];
        let mut text = template.to_owned();
        for (placeholder, value) in fields {
            if text.contains(placeholder) {
                let value = value.ok_or_else(|| {
                    BadInput(format!(
                        "{setting} {template:?} needs {placeholder}, which user-data does not give"
                    ))
                })?;
                text = text.replace(placeholder, value);
            }
        }
        if text.contains('{') || text.contains('}') {
            return Err(BadInput(format!(
                "{setting} {template:?} names an unknown placeholder"
            )));
        }
        Ok(text)
    }

    /// The human form of `bootlace identity`: one `key  value` line each.
    pub fn to_text(&self) -> String {
        let none = "-";
        let mut rows: Vec<(String, &str)> = vec![
            ("machine_id".into(), &self.machine_id),
            ("region".into(), self.region.as_deref().unwrap_or(none)),
            (
                "availability_zone".into(),
                self.availability_zone.as_deref().unwrap_or(none),
            ),
            (
                "instance_type".into(),
                self.instance_type.as_deref().unwrap_or(none),
            ),
            ("environment".into(), self.environment.as_deref().unwrap_or(none)),
            ("role".into(), self.role.as_deref().unwrap_or(none)),
            ("context".into(), self.context.as_deref().unwrap_or(none)),
        ];
        rows.extend(self.extra.iter().map(|(k, v)| (format!("extra.{k}"), v.as_str())));
        if self.credentials.is_some() {
            rows.push(("credentials".into(), "from user-data (redacted)"));
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        rows.iter().map(|(k, v)| format!("{k:width$}  {v}\n")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_from_the_identity() {
        let identity = Identity {
            machine_id: "i-1".into(),
            region: None,
            availability_zone: None,
            instance_type: None,
            environment: Some("prod".into()),
            role: None,
            context: Some("b".into()),
            extra: BTreeMap::new(),
            credentials: None,
        };
        assert_eq!(
            identity
                .fill("{context}/{environment}/{machine_id}.sh", "x")
                .unwrap(),
            "b/prod/i-1.sh"
        );
        assert!(
            identity
                .fill("{role}", "x")
                .unwrap_err()
                .0
                .contains("needs {role}")
        );
        assert!(
            identity
                .fill("{team}", "x")
                .unwrap_err()
                .0
                .contains("unknown placeholder")
        );
    }

    #[test]
    fn source_spec_parses() {
        assert_eq!("imds".parse::<SourceSpec>(), Ok(SourceSpec::Imds));
        assert_eq!(
            "file:/x/y".parse::<SourceSpec>(),
            Ok(SourceSpec::File("/x/y".into()))
        );
        for bad in ["", "file:", "imds:", "dns", "File:/x"] {
            assert!(bad.parse::<SourceSpec>().is_err(), "{bad}");
        }
    }
}
