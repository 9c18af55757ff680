//! Runners (DESIGN §6.10): the program that runs an init candidate, picked by the
//! candidate's suffix. `sh` runs a script as today (executable, else by its `#!`
//! line, else `/bin/sh`); `ansible` runs a playbook with `ansible-playbook`; the config
//! may add runners of its own (Puppet, Salt: a command and the exit codes that mean ok).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::units::Invalid;

/// What runs a candidate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Runner {
    pub name: String,
    /// Without the dot: `sh`; `yml` and `yaml`; `pp`.
    pub suffixes: Vec<String>,
    pub kind: Kind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// As an executable, else by its `#!` line, else `/bin/sh`: today's init scripts.
    Script,
    /// `ansible-playbook` (or the program `command` names) with bootlace's fixed
    /// environment, variables file and callback.
    Ansible { command: Vec<String> },
    /// `command` with the candidate's path appended; `ok_codes` mean success.
    Command {
        command: Vec<String>,
        ok_codes: Vec<i32>,
    },
}

impl Runner {
    pub(crate) fn script() -> Self {
        Self {
            name: "sh".into(),
            suffixes: vec!["sh".into()],
            kind: Kind::Script,
        }
    }

    fn ansible(command: Option<Vec<String>>) -> Self {
        Self {
            name: "ansible".into(),
            suffixes: vec!["yml".into(), "yaml".into()],
            kind: Kind::Ansible {
                command: command.unwrap_or_else(|| vec!["ansible-playbook".into()]),
            },
        }
    }

    /// Whether an exit code is success for this runner.
    pub fn ok(&self, code: i32) -> bool {
        match &self.kind {
            Kind::Command { ok_codes, .. } => ok_codes.contains(&code),
            _ => code == 0,
        }
    }
}

/// `[init] runners`: a list (names in the order a suffixless candidate tries them, or
/// inline tables that define one), or a table of definitions (`[init.runners.NAME]`)
/// that keeps the built-in order, `sh` then `ansible`, and adds its own after them.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum RunnersConfig {
    Order(Vec<Entry>),
    Defined(BTreeMap<String, Definition>),
}

impl Default for RunnersConfig {
    fn default() -> Self {
        Self::Order(vec![Entry::Name("sh".into()), Entry::Name("ansible".into())])
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Entry {
    Name(String),
    Inline(Definition),
}

/// One runner's settings. `name` only in the list's inline form.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    pub name: Option<String>,
    pub suffix: Option<String>,
    pub command: Option<Vec<String>>,
    pub ok_codes: Option<Vec<i32>>,
}

const KEY: &str = "init.runners";

impl RunnersConfig {
    /// The runners in the order a suffixless candidate tries them.
    pub fn resolve(&self) -> Result<Vec<Runner>, Invalid> {
        let mut runners = Vec::new();
        match self {
            Self::Order(entries) => {
                for entry in entries {
                    runners.push(match entry {
                        Entry::Name(name) => builtin(name, &Definition::default())?.ok_or_else(|| {
                            Invalid::new(
                                KEY,
                                format!(
                                    "unknown runner {name:?}: the built-in ones are \"sh\" and \
                                     \"ansible\"; define another with name, suffix and command"
                                ),
                            )
                        })?,
                        Entry::Inline(definition) => {
                            let name = definition.name.as_deref().ok_or_else(|| {
                                Invalid::new(KEY, "a runner defined in the list needs a name")
                            })?;
                            define(name, definition)?
                        }
                    });
                }
            }
            Self::Defined(definitions) => {
                for name in ["sh", "ansible"] {
                    let definition = definitions.get(name).cloned().unwrap_or_default();
                    runners.extend(builtin(name, &definition)?);
                }
                for (name, definition) in definitions {
                    if definition.name.is_some() {
                        return Err(Invalid::new(
                            format!("{KEY}.{name}.name"),
                            "the table's name is the runner's name",
                        ));
                    }
                    if !matches!(name.as_str(), "sh" | "ansible") {
                        runners.push(define(name, definition)?);
                    }
                }
            }
        }
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for runner in &runners {
            if runners.iter().filter(|r| r.name == runner.name).count() > 1 {
                return Err(Invalid::new(
                    KEY,
                    format!("runner {:?} is named twice", runner.name),
                ));
            }
            for suffix in &runner.suffixes {
                if let Some(other) = seen.insert(suffix, &runner.name) {
                    return Err(Invalid::new(
                        KEY,
                        format!("runners {other:?} and {:?} both take .{suffix}", runner.name),
                    ));
                }
            }
        }
        Ok(runners)
    }
}

/// A built-in runner with what its definition may change (`ansible`: the command).
fn builtin(name: &str, definition: &Definition) -> Result<Option<Runner>, Invalid> {
    let key = format!("{KEY}.{name}");
    let Definition {
        name: _,
        suffix,
        command,
        ok_codes,
    } = definition;
    match name {
        "sh" if suffix.is_some() || command.is_some() || ok_codes.is_some() => Err(Invalid::new(
            key,
            "the built-in sh runner has no settings: scripts run as executables, or by their #! line",
        )),
        "sh" => Ok(Some(Runner::script())),
        "ansible" if suffix.is_some() || ok_codes.is_some() => Err(Invalid::new(
            key,
            "the built-in ansible runner takes only `command` (ansible-playbook's path)",
        )),
        "ansible" => {
            if let Some(command) = command {
                check_command(&key, command)?;
            }
            Ok(Some(Runner::ansible(command.clone())))
        }
        _ => Ok(None),
    }
}

/// A runner the config adds.
fn define(name: &str, definition: &Definition) -> Result<Runner, Invalid> {
    let key = format!("{KEY}.{name}");
    if let Some(runner) = builtin(name, definition)? {
        return Ok(runner);
    }
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(Invalid::new(
            key,
            "a runner's name is lowercase letters, digits, - and _",
        ));
    }
    let suffix = definition.suffix.as_deref().ok_or_else(|| {
        Invalid::new(
            format!("{key}.suffix"),
            "missing: the file suffix it runs (\"pp\")",
        )
    })?;
    let suffix = suffix.strip_prefix('.').unwrap_or(suffix);
    if suffix.is_empty() || !suffix.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(Invalid::new(
            format!("{key}.suffix"),
            format!("{suffix:?}: letters and digits only"),
        ));
    }
    let command = definition.command.clone().ok_or_else(|| {
        Invalid::new(
            format!("{key}.command"),
            "missing: the program and its arguments, the candidate's path is added last",
        )
    })?;
    check_command(&format!("{key}.command"), &command)?;
    Ok(Runner {
        name: name.to_owned(),
        suffixes: vec![suffix.to_owned()],
        kind: Kind::Command {
            command,
            ok_codes: definition.ok_codes.clone().unwrap_or_else(|| vec![0]),
        },
    })
}

fn check_command(key: &str, command: &[String]) -> Result<(), Invalid> {
    match command.first() {
        Some(program) if !program.is_empty() && !command.iter().any(|a| a.contains('\0')) => Ok(()),
        _ => Err(Invalid::new(key, "needs a program to run")),
    }
}

/// The suffix a candidate template names for its file (`bootstrapper.sh` → `sh`), or
/// `None` when it leaves the runners to try theirs. Read from the template, not the
/// filled path: a machine id with a dot in it is not a suffix.
pub fn suffix_of(template: &str) -> Option<&str> {
    let last = template.rsplit('/').next().unwrap_or(template);
    let literal = last.rsplit('}').next().unwrap_or(last);
    literal
        .rsplit_once('.')
        .map(|(_, suffix)| suffix)
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Runner>, String> {
        #[derive(Deserialize)]
        struct Init {
            runners: RunnersConfig,
        }
        let init: Init = toml::from_str(text).map_err(|e| e.to_string())?;
        init.runners
            .resolve()
            .map_err(|e| format!("{}: {}", e.key, e.message))
    }

    #[test]
    fn the_default_tries_scripts_then_playbooks() {
        let runners = RunnersConfig::default().resolve().unwrap();
        let names: Vec<_> = runners.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["sh", "ansible"]);
        assert_eq!(runners[1].suffixes, ["yml", "yaml"]);
    }

    #[test]
    fn a_table_keeps_the_built_in_order_and_adds_its_own() {
        let runners = parse(
            "[runners.puppet]\nsuffix = \"pp\"\ncommand = [\"puppet\", \"apply\", \"--detailed-exitcodes\"]\n\
             ok_codes = [0, 2]\n[runners.ansible]\ncommand = [\"/opt/ansible/bin/ansible-playbook\"]\n",
        )
        .unwrap();
        let names: Vec<_> = runners.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["sh", "ansible", "puppet"]);
        assert!(runners[2].ok(2) && !runners[2].ok(4));
        assert_eq!(
            runners[1].kind,
            Kind::Ansible {
                command: vec!["/opt/ansible/bin/ansible-playbook".into()]
            }
        );
    }

    #[test]
    fn a_list_orders_and_may_define_inline() {
        let runners = parse(
            "runners = [\"ansible\", { name = \"salt\", suffix = \"sls\", command = [\"salt-call\", \"--local\"] }]",
        )
        .unwrap();
        let names: Vec<_> = runners.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["ansible", "salt"]);
    }

    #[test]
    fn mistakes_are_named() {
        for (text, says) in [
            ("runners = [\"chef\"]", "unknown runner \"chef\""),
            ("runners = [\"sh\", \"sh\"]", "named twice"),
            ("[runners.x]\ncommand = [\"x\"]", "init.runners.x.suffix: missing"),
            (
                "[runners.x]\nsuffix = \"yml\"\ncommand = [\"x\"]",
                "both take .yml",
            ),
            (
                "[runners.x]\nsuffix = \"p.p\"\ncommand = [\"x\"]",
                "letters and digits",
            ),
            ("[runners.x]\nsuffix = \"pp\"\ncommand = []", "needs a program"),
            ("[runners.sh]\ncommand = [\"bash\"]", "has no settings"),
            ("[runners.ansible]\nsuffix = \"yaml\"", "takes only `command`"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn the_suffix_is_the_templates_not_the_identitys() {
        assert_eq!(suffix_of("{context}/bootstrapper.sh"), Some("sh"));
        assert_eq!(suffix_of("{context}/{environment}/bootstrapper"), None);
        assert_eq!(suffix_of("{context}/{machine_id}"), None);
        assert_eq!(suffix_of("{context}/{machine_id}.yml"), Some("yml"));
        assert_eq!(suffix_of("v1.2/bootstrapper"), None);
    }
}
