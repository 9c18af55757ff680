//! `bootlace release vendor DIR` (DESIGN §6.10): the roles and collections
//! `bootstrap/requirements.yml` names, installed into the release tree by the real
//! `ansible-galaxy` (from Galaxy, git, `file://` tarballs: whatever the operator's
//! machine reaches), and `bootstrap/vendor.lock.json` written with the name, version,
//! source and tree sha256 of each, so that a boot needs no network and a review sees
//! exactly what a release carries.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::BadInput;
use crate::process::{How, execute};

use super::{Config, Kind, ansible};

/// How long one `ansible-galaxy` install may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(1800);

#[derive(Debug, Serialize)]
pub struct Lock {
    pub format_version: u32,
    pub roles: Vec<Locked>,
    pub collections: Vec<Locked>,
}

#[derive(Debug, Serialize)]
pub struct Locked {
    pub name: String,
    pub version: Option<String>,
    pub source: Option<String>,
    pub tree_sha256: String,
}

/// Installs what `DIR`'s requirements name and writes the lock; returns it.
pub fn vendor(config: &Config, dir: &Path, quiet: bool) -> anyhow::Result<Lock> {
    let root = config.root(dir);
    let requirements = root.join("requirements.yml");
    if !requirements.is_file() {
        return Err(BadInput(format!(
            "{} does not exist: list the roles and collections to vendor there",
            requirements.display()
        ))
        .into());
    }
    let playbook = config
        .runners()?
        .into_iter()
        .find_map(|r| match r.kind {
            Kind::Ansible { command } => Some(command[0].clone()),
            _ => None,
        })
        .unwrap_or_else(|| "ansible-playbook".into());
    // ansible-galaxy is installed beside ansible-playbook.
    let galaxy = ansible::find_program(&playbook)
        .and_then(|p| Some(p.parent()?.join("ansible-galaxy")))
        .filter(|p| p.is_file())
        .or_else(|| ansible::find_program("ansible-galaxy"))
        .ok_or_else(|| BadInput(format!("release vendor: {}", ansible::missing("ansible-galaxy"))))?;
    let roles = root.join("roles");
    let collections = root.join("collections");
    let wanted = requirements_of(&galaxy, &requirements)?;
    for (kind, into, count) in [
        ("role", &roles, wanted.roles),
        ("collection", &collections, wanted.collections),
    ] {
        // ansible-galaxy refuses a file without the kind it is asked to install.
        if count == 0 {
            continue;
        }
        let mut command = Command::new(&galaxy);
        command
            .args([kind, "install", "--force", "-r"])
            .arg(&requirements)
            .arg("-p")
            .arg(into);
        ansible::without_inherited_settings(&mut command);
        let how = How {
            timeout: INSTALL_TIMEOUT,
            quiet_stdout: quiet,
            discard_stdout: false,
            forward_signals: true,
            what: "ansible-galaxy",
            started: None,
        };
        let env = BTreeMap::from([("ANSIBLE_NOCOLOR".to_owned(), "1".to_owned())]);
        let outcome = execute(command, dir, &env, &how)?;
        if outcome.exit_code != Some(0) {
            let why = outcome
                .output_tail
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| crate::text::printable(l.trim(), 400))
                .unwrap_or_default();
            anyhow::bail!(
                "ansible-galaxy {kind} install -r {} exited with {:?}: {why}",
                requirements.display(),
                outcome.exit_code
            );
        }
    }
    let sources = wanted.sources;
    let mut lock = Lock {
        format_version: 1,
        roles: Vec::new(),
        collections: Vec::new(),
    };
    for entry in sorted_dirs(&roles) {
        let name = entry
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        // Only what ansible-galaxy installed: it leaves this file in each role.
        let info = entry.join("meta/.galaxy_install_info");
        if !info.is_file() {
            continue;
        }
        let version = std::fs::read_to_string(&info).ok().and_then(|text| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix("version:"))
                .map(|v| v.trim().trim_matches(['\'', '"']).to_owned())
                .filter(|v| !v.is_empty())
        });
        lock.roles.push(Locked {
            source: sources.get(&name).cloned(),
            tree_sha256: tree_sha256(&entry, &["meta/.galaxy_install_info"])?,
            name,
            version,
        });
    }
    for namespace in sorted_dirs(&collections.join("ansible_collections")) {
        for collection in sorted_dirs(&namespace) {
            let manifest = collection.join("MANIFEST.json");
            let Ok(text) = std::fs::read(&manifest) else {
                continue;
            };
            let info: serde_json::Value = serde_json::from_slice(&text).unwrap_or_default();
            let info = &info["collection_info"];
            let name = format!(
                "{}.{}",
                info["namespace"].as_str().unwrap_or_default(),
                info["name"].as_str().unwrap_or_default()
            );
            lock.collections.push(Locked {
                source: sources.get(&name).cloned(),
                version: info["version"].as_str().map(str::to_owned),
                tree_sha256: tree_sha256(&collection, &[])?,
                name,
            });
        }
    }
    let path = root.join("vendor.lock.json");
    let mut text = serde_json::to_vec_pretty(&lock)?;
    text.push(b'\n');
    crate::files::write_atomic(&path, &text, 0o644)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    Ok(lock)
}

fn sorted_dirs(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut dirs: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// What a requirements file asks for: how many roles and collections, and each one's
/// name and source.
#[derive(Debug, Default, serde::Deserialize)]
struct Wanted {
    roles: usize,
    collections: usize,
    sources: BTreeMap<String, String>,
}

/// Reads `requirements` with the Python that runs ansible-galaxy (its YAML library is
/// Ansible's own dependency): each requirement's name and where it came from, a role's
/// `src` (or its Galaxy name), a collection's `source` (or "galaxy").
fn requirements_of(galaxy: &Path, requirements: &Path) -> anyhow::Result<Wanted> {
    const READ: &str = r#"
import json, sys, yaml
data = yaml.safe_load(open(sys.argv[1])) or {}
if isinstance(data, list):
    data = {"roles": data}
if not isinstance(data, dict):
    sys.exit("not a list of roles, nor a table of roles and collections")
roles, colls, out = data.get("roles") or [], data.get("collections") or [], {}
for role in roles:
    if isinstance(role, str):
        role = {"src": role}
    src = str(role.get("src") or role.get("name") or "")
    name = role.get("name") or src.rstrip("/").split("/")[-1].split(",")[0]
    for ext in (".tar.gz", ".tgz", ".tar", ".git"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    out[str(name)] = src
for coll in colls:
    if isinstance(coll, str):
        coll = {"name": coll}
    out[str(coll.get("name"))] = str(coll.get("source") or coll.get("type") or "galaxy")
print(json.dumps({"roles": len(roles), "collections": len(colls), "sources": out}))
"#;
    let python = ansible::interpreter(galaxy);
    let output = Command::new(&python)
        .args(["-c", READ])
        .arg(requirements)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("reading {} with {python}: {e}", requirements.display()))?;
    let text = String::from_utf8_lossy(&output.stdout[..output.stdout.len().min(1 << 20)]).into_owned();
    match serde_json::from_str(&text) {
        Ok(wanted) if output.status.success() => Ok(wanted),
        _ => {
            let why = String::from_utf8_lossy(&output.stderr);
            let why = why
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("not YAML");
            Err(BadInput(format!(
                "{}: {}",
                requirements.display(),
                crate::text::printable(why.trim(), 300)
            ))
            .into())
        }
    }
}

/// A tree's sha256, the same wherever and whenever it is installed: every entry in
/// path order as its path, whether it is executable, and its contents' sha256 (or link target), but for
/// the files in `skip` (install dates).
pub fn tree_sha256(dir: &Path, skip: &[&str]) -> anyhow::Result<String> {
    let mut entries = Vec::new();
    collect(dir, "", &mut entries)?;
    entries.sort();
    let mut tree = Sha256::new();
    for rel in entries {
        if skip.contains(&rel.as_str()) {
            continue;
        }
        let path = dir.join(&rel);
        let meta = std::fs::symlink_metadata(&path)?;
        let what = if meta.file_type().is_symlink() {
            format!("link {}", std::fs::read_link(&path)?.display())
        } else if meta.is_dir() {
            "dir".to_owned()
        } else {
            let mut hashing = crate::archive::Hashing::new(std::fs::File::open(&path)?);
            std::io::copy(&mut hashing, &mut std::io::sink())?;
            format!("file {}", hashing.finish().1)
        };
        // Whether it is executable, not its whole mode: the installer's umask is not
        // the content's.
        let x = if meta.mode() & 0o111 != 0 { "x" } else { "-" };
        tree.update(format!("{rel}\0{x}\0{what}\n"));
    }
    Ok(hex::encode(tree.finalize()))
}

fn collect(dir: &Path, prefix: &str, out: &mut Vec<String>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        if entry.file_type()?.is_dir() {
            collect(&entry.path(), &rel, out)?;
        }
        out.push(rel);
    }
    Ok(())
}
