//! What `release push` checks of a release's inits before the tag is spent (DESIGN
//! §6.10): no candidate with two runnable files (`bootstrapper.sh` beside
//! `bootstrapper.yml`), and every playbook candidate valid and self-contained —
//! `ansible-playbook --syntax-check` with the release's roles and collections only, so
//! that a module or role the release does not carry is named here, not at boot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::BadInput;
use crate::process::{How, execute};

use super::ansible::{self, Mode, Setting};
use super::{Config, Kind, Runner};

/// Folders under the init root that hold vendored content, not candidates.
const VENDORED: [&str; 2] = ["roles", "collections"];
/// Files looked at under the init root, at most.
const FILES_MAX: usize = 100_000;
/// How long one syntax check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(300);

/// A file under the init root that some candidate template can name, and its runner.
#[derive(Debug)]
pub struct Found {
    pub script: String,
    pub runner: Runner,
}

/// The files under `release`'s init root that candidates can name. Two for one
/// candidate (the same path but for the runners' suffixes) are an error.
pub fn candidates_in(config: &Config, release: &Path) -> Result<Vec<Found>, BadInput> {
    let root = config.root(release);
    let runners = config.runners()?;
    let mut files = Vec::new();
    walk(&root, "", &mut files)?;
    files.sort();
    let mut found = Vec::new();
    // (template, the path without a runner's suffix) -> the files that fill it.
    let mut levels: BTreeMap<(usize, String), Vec<String>> = BTreeMap::new();
    for file in &files {
        for (at, template) in config.candidates.iter().enumerate() {
            let pattern = template.as_str();
            let fixed = super::runner::suffix_of(template);
            let by_suffix = |suffix: &str| runners.iter().find(|r| r.suffixes.iter().any(|s| s == suffix));
            if fixed.is_some() {
                if matches(pattern, file) {
                    let runner = fixed.and_then(by_suffix).cloned().unwrap_or_else(Runner::script);
                    found.push(Found {
                        script: file.clone(),
                        runner,
                    });
                }
                continue;
            }
            for runner in &runners {
                for suffix in &runner.suffixes {
                    if let Some(stem) = file.strip_suffix(&format!(".{suffix}"))
                        && matches(pattern, stem)
                    {
                        levels
                            .entry((at, stem.to_owned()))
                            .or_default()
                            .push(file.clone());
                        found.push(Found {
                            script: file.clone(),
                            runner: runner.clone(),
                        });
                    }
                }
            }
            if matches(pattern, file) {
                levels.entry((at, file.clone())).or_default().push(file.clone());
            }
        }
    }
    for ((_, stem), files) in &levels {
        if files.len() > 1 {
            return Err(BadInput(format!(
                "init candidate {stem}: {} all exist under {}; keep one",
                files.join(", "),
                config.root
            )));
        }
    }
    found.sort_by(|a, b| a.script.cmp(&b.script));
    found.dedup_by(|a, b| a.script == b.script);
    Ok(found)
}

/// Whether `path` is what `template` gives for some identity: each `{placeholder}`
/// stands for one or more characters of one path component.
fn matches(template: &str, path: &str) -> bool {
    match template.find('{') {
        None => template == path,
        Some(open) => {
            let Some(close) = template[open..].find('}').map(|c| open + c) else {
                return template == path;
            };
            let (literal, rest) = (&template[..open], &template[close + 1..]);
            let Some(after) = path.strip_prefix(literal) else {
                return false;
            };
            let component = after.find('/').unwrap_or(after.len());
            (1..=component).any(|n| matches(rest, &after[n..]))
        }
    }
}

/// Every regular file under `dir` but the vendored folders, as paths relative to the
/// init root.
fn walk(dir: &Path, prefix: &str, files: &mut Vec<String>) -> Result<(), BadInput> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_dir() {
            if !(prefix.is_empty() && VENDORED.contains(&name.as_str())) {
                walk(&entry.path(), &rel, files)?;
            }
        } else if kind.is_file() || kind.is_symlink() {
            if files.len() >= FILES_MAX {
                return Err(BadInput(format!(
                    "more than {FILES_MAX} files under {}: not an init root",
                    dir.display()
                )));
            }
            files.push(rel);
        }
    }
    Ok(())
}

/// Runs `ansible-playbook --syntax-check` on every playbook candidate of the release at
/// `release`, with nothing outside the release visible. A failure is the release's
/// fault (exit 2), and names the playbook and Ansible's error line.
pub fn check_playbooks(config: &Config, release: &Path, found: &[Found]) -> anyhow::Result<usize> {
    let playbooks: Vec<(&Found, &Vec<String>)> = found
        .iter()
        .filter_map(|f| match &f.runner.kind {
            Kind::Ansible { command } => Some((f, command)),
            _ => None,
        })
        .collect();
    if playbooks.is_empty() {
        return Ok(0);
    }
    let work = tempfile::Builder::new().prefix("bootlace-check-").tempdir()?;
    let root = config.root(release);
    for (playbook, command) in &playbooks {
        let program = ansible::find_program(&command[0]).ok_or_else(|| {
            BadInput(format!(
                "{} is a playbook, and release push checks playbooks with ansible-playbook: {}",
                playbook.script,
                ansible::missing(&command[0])
            ))
        })?;
        let setting = Setting {
            release,
            root: &root,
            work: work.path(),
            mode: Mode::Syntax,
        };
        let path: PathBuf = root.join(&playbook.script);
        let mut prepared = ansible::command(&program, &command[1..], &path, &setting, &BTreeMap::new())?;
        let how = How {
            timeout: CHECK_TIMEOUT,
            quiet_stdout: true,
            discard_stdout: false,
            forward_signals: false,
            what: "playbook syntax check",
            started: None,
        };
        let outcome = execute(prepared.take_command(), release, &prepared.env, &how)?;
        if outcome.exit_code != Some(0) {
            let why = outcome
                .output_tail
                .lines()
                .find(|l| l.contains("ERROR"))
                .or_else(|| outcome.output_tail.lines().rev().find(|l| !l.trim().is_empty()))
                .map(|l| crate::text::printable(l.trim(), 400))
                .unwrap_or_else(|| format!("ansible-playbook exited with {:?}", outcome.exit_code));
            return Err(BadInput(format!(
                "playbook {} does not pass ansible-playbook --syntax-check with only the \
                 release's roles and collections (vendor them: bootlace release vendor): {why}",
                playbook.script
            ))
            .into());
        }
    }
    Ok(playbooks.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_stand_for_one_component() {
        assert!(matches(
            "{context}/{environment}/bootstrapper",
            "b/prod/bootstrapper"
        ));
        assert!(matches("{context}/{environment}/{machine_id}", "b/prod/i-1.x"));
        assert!(!matches("{context}/{environment}/bootstrapper", "b/bootstrapper"));
        assert!(!matches("{context}/bootstrapper", "b/c/bootstrapper"));
        assert!(matches("{context}/boot-{role}.yml", "b/boot-web.yml"));
        assert!(!matches("{context}/boot-{role}.yml", "b/boot-.yml"));
    }

    #[test]
    fn two_runnable_files_for_one_candidate_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("bootstrap/b/prod");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(dir.path().join("bootstrap/roles/x/tasks")).unwrap();
        std::fs::write(dir.path().join("bootstrap/roles/x/tasks/main.yml"), "").unwrap();
        std::fs::write(root.join("bootstrapper.sh"), "").unwrap();
        let config = Config {
            candidates: vec!["{context}/{environment}/bootstrapper".into()],
            ..Config::default()
        };
        let found = candidates_in(&config, dir.path()).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].script, "b/prod/bootstrapper.sh");
        std::fs::write(root.join("bootstrapper.yml"), "").unwrap();
        let err = candidates_in(&config, dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("b/prod/bootstrapper.sh, b/prod/bootstrapper.yml"),
            "{err}"
        );
    }
}
