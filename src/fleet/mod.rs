//! The fleet view (DESIGN §6.4): what runs where, read from the reports instances
//! write into the store. The reports are listed a page at a time, fetched with bounded
//! concurrency and folded as they arrive into one row per (environment, role, tag), so
//! memory does not grow with the fleet unless a row per instance is asked for.

pub mod html;
pub mod prune;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use futures::{FutureExt, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::release::pointer;
use crate::report::{self, Status};
use crate::store::{Listed, Store, layout};

/// Reports fetched at once.
pub const CONCURRENCY: usize = 64;
/// Unreadable reports named one by one; past this many they are only counted.
const NAMED_UNREADABLE: usize = 100;

/// Which reports to read, and how to judge them.
#[derive(Clone, Debug)]
pub struct Scope {
    pub environment: Option<String>,
    pub role: Option<String>,
    /// A report older than this is stale: its instance is gone or stuck.
    pub stale: Duration,
    /// Keep a row per instance (memory then grows with the fleet).
    pub instances: bool,
    /// The `deploy.pointer` template, to find each group's pointer.
    pub pointer_template: String,
    /// `[trust] keys`: with any, a pointer marks its tags only when it verifies.
    pub keys: crate::trust::Keys,
    pub now: SystemTime,
}

impl Scope {
    /// The folder the listing starts from: the narrowest one the scope allows.
    pub fn prefix(&self) -> String {
        match (&self.environment, &self.role) {
            (Some(env), Some(role)) => format!("{}{env}/{role}/", layout::REPORTS),
            (Some(env), None) => format!("{}{env}/", layout::REPORTS),
            _ => layout::REPORTS.to_owned(),
        }
    }
}

/// What the fleet view reads of a report, format 1 or 2; everything else in it is
/// skipped unread (an init's output tail, say).
#[derive(Deserialize)]
struct Seen {
    #[serde(default)]
    format_version: u32,
    status: Status,
    environment: Option<String>,
    role: Option<String>,
    machine_id: Option<String>,
    context: Option<String>,
    tag: Option<String>,
    init: Option<SeenInit>,
    #[serde(default)]
    checked_at: Option<String>,
    finished_at: Option<String>,
    bootlace_version: Option<String>,
    #[serde(default)]
    hostname: Option<String>,
    error: Option<String>,
    #[serde(default)]
    rolled_back_from: Option<SeenRolledBack>,
    /// How the release of its last deploy arrived (DESIGN §6.9); a way this bootlace
    /// does not know (a newer one's), or a size that is not one, is shown as none, not
    /// a reason to drop the report.
    #[serde(default, deserialize_with = "lenient")]
    via: Option<crate::report::Via>,
    #[serde(default, deserialize_with = "lenient")]
    bytes_downloaded: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    drift: Option<SeenDrift>,
}

/// A field that is not what this bootlace expects reads as absent.
fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let value = Option::<serde_json::Value>::deserialize(d)?;
    Ok(value.and_then(|v| serde_json::from_value(v).ok()))
}

#[derive(Deserialize)]
struct SeenInit {
    script: String,
    /// A playbook's totals (DESIGN §6.10).
    #[serde(default, deserialize_with = "lenient")]
    tasks: Option<SeenTasks>,
}

#[derive(Deserialize)]
struct SeenTasks {
    changed: u64,
    failed: u64,
}

/// The agent's last drift check.
#[derive(Deserialize)]
struct SeenDrift {
    changed: u64,
    #[serde(default)]
    repaired: Option<bool>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct SeenRolledBack {
    tag: String,
}

/// One instance, as its report says.
#[derive(Clone, Debug, Serialize)]
pub struct Instance {
    pub environment: String,
    pub role: String,
    pub machine_id: String,
    pub context: Option<String>,
    pub tag: Option<String>,
    pub status: Status,
    pub stale: bool,
    /// When the instance last reported: its last pointer check or run, whichever is later.
    pub reported_at: String,
    pub age_s: u64,
    #[serde(skip)]
    pub age: Duration,
    pub init_script: Option<String>,
    pub bootlace_version: Option<String>,
    pub hostname: Option<String>,
    pub error: Option<String>,
    /// The tag it rolled back from, when its status is `rolled_back`.
    pub rolled_back_from: Option<String>,
    /// How the release of its last deploy arrived, and the bytes it downloaded;
    /// `None` when the last run deployed nothing.
    pub via: Option<crate::report::Via>,
    pub bytes_downloaded: Option<u64>,
    /// A playbook init's changed and failed tasks, at its last run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_tasks: Option<InitTasks>,
    /// The agent's last drift check: `none`, `drifted`, `repaired`, `repair failed`,
    /// or `unknown` (the check could not tell).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<&'static str>,
    pub format_version: u32,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct InitTasks {
    pub changed: u64,
    pub failed: u64,
}

/// Instances per status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ByStatus {
    pub ok: u64,
    pub failed: u64,
    pub degraded: u64,
    pub rolled_back: u64,
}

impl ByStatus {
    /// The counts of `groups` added up.
    pub fn sum<'a>(groups: impl Iterator<Item = &'a Group>) -> ByStatus {
        groups.fold(ByStatus::default(), |mut all, g| {
            all.ok += g.by_status.ok;
            all.failed += g.by_status.failed;
            all.degraded += g.by_status.degraded;
            all.rolled_back += g.by_status.rolled_back;
            all
        })
    }

    fn add(&mut self, status: Status) {
        *match status {
            Status::Ok => &mut self.ok,
            Status::Failed => &mut self.failed,
            Status::Degraded => &mut self.degraded,
            Status::RolledBack => &mut self.rolled_back,
        } += 1;
    }
}

/// One row: the instances of a role in an environment that run one tag.
#[derive(Clone, Debug, Serialize)]
pub struct Group {
    pub environment: String,
    pub role: String,
    pub tag: Option<String>,
    pub instances: u64,
    pub by_status: ByStatus,
    pub stale: u64,
    /// The pointer the group follows, when one speaks for all of it.
    pub pointer: Option<String>,
    /// The tag the group's pointer names for everyone.
    pub stable: bool,
    /// The tag the group's pointer is rolling out.
    pub target: bool,
}

/// What a group's pointer names, read once per pointer.
#[derive(Clone, Debug, Serialize)]
pub struct Marks {
    pub pointer: String,
    pub stable: String,
    pub serial: u64,
    pub target: Option<String>,
    pub percent: Option<f64>,
}

/// A report that could not be read, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Unreadable {
    pub key: String,
    pub reason: String,
}

/// The fleet, as its reports say.
#[derive(Debug, Serialize)]
pub struct Fleet {
    pub generated_at: String,
    pub store: String,
    /// The folder the reports were listed from, for messages.
    #[serde(skip)]
    pub listed: String,
    pub stale_after_s: u64,
    pub groups: Vec<Group>,
    /// A row per instance, only when asked for.
    #[serde(skip)]
    pub instances: Vec<Instance>,
    /// The pointer of each (environment, role) that has instances, when there is one.
    pub pointers: BTreeMap<String, Marks>,
    pub unreadable_count: u64,
    /// The first of them, named.
    pub unreadable: Vec<Unreadable>,
}

impl Fleet {
    pub fn total(&self) -> ByStatus {
        ByStatus::sum(self.groups.iter())
    }

    pub fn instance_count(&self) -> u64 {
        self.groups.iter().map(|g| g.instances).sum()
    }

    pub fn stale_count(&self) -> u64 {
        self.groups.iter().map(|g| g.stale).sum()
    }
}

/// A report read, or why not.
enum Read {
    Seen(Box<Instance>),
    Unreadable(Unreadable),
    /// Gone between the listing and the read, or outside the scope.
    Skipped,
}

/// Reads the fleet in `scope` from `store`, calling `progress` with each report read.
/// Only a failed listing fails it: each report that cannot be read is named instead.
pub async fn read(store: &Store, scope: &Scope, mut progress: impl FnMut(u64)) -> anyhow::Result<Fleet> {
    let mut folded = Folded::default();
    let mut reads = store
        .list_all(&scope.prefix())
        .map_ok(|listed| read_one(store, scope, listed).map(Ok))
        .try_buffer_unordered(CONCURRENCY);
    while let Some(read) = reads.try_next().await? {
        progress(1);
        folded.add(read, scope.instances);
    }
    drop(reads);
    let pointers = read_pointers(store, scope, &folded.groups).await;
    Ok(folded.finish(store, scope, pointers))
}

/// Reads one listed object as a report.
async fn read_one(store: &Store, scope: &Scope, listed: Listed) -> Read {
    // What reaches a terminal or a log from here is made printable: a report's body
    // is the instance's word, and its key whatever the store holds.
    let unreadable = |reason: String| {
        Read::Unreadable(Unreadable {
            key: printable(&listed.key, 300),
            reason: printable(&reason, 300),
        })
    };
    if listed.odd {
        return unreadable("its name is not printable text (a control character, or not UTF-8)".into());
    }
    let Some((environment, role, machine_id)) = layout::report_parts(&listed.key) else {
        return unreadable(
            "not where a report belongs (reports/<environment>/<role>/<machine_id>.json)".into(),
        );
    };
    if scope.role.as_deref().is_some_and(|r| r != role) {
        return Read::Skipped;
    }
    if listed.size > report::MAX_BYTES {
        return unreadable(format!(
            "{} bytes, over the {}-byte limit for a report; not read",
            listed.size,
            report::MAX_BYTES
        ));
    }
    let bytes = match store.get(&listed.key, report::MAX_BYTES).await {
        Ok(Some(object)) => object.bytes,
        Ok(None) => return Read::Skipped,
        Err(err) => return unreadable(err.reason),
    };
    let seen: Seen = match serde_json::from_slice(&bytes) {
        Ok(seen) => seen,
        Err(err) => return unreadable(format!("not a report: {}", printable(&err.to_string(), 200))),
    };
    for (what, said, path) in [
        ("environment", &seen.environment, environment),
        ("role", &seen.role, role),
        ("machine_id", &seen.machine_id, machine_id),
    ] {
        if said.as_deref() != Some(path) {
            return unreadable(format!(
                "its {what} is {}, but it is stored as {path}'s",
                said.as_deref().unwrap_or("missing")
            ));
        }
    }
    if let Some(tag) = &seen.tag
        && let Err(why) = crate::release::check_tag(tag)
    {
        return unreadable(why.0);
    }
    if let Some(context) = &seen.context
        && let Err(why) = crate::identity::userdata::check_name(context)
    {
        return unreadable(format!("its context {context:?}: {why}"));
    }
    // The instance's own word (its last pointer check or run), but never later than
    // the store says the report was written: a clock running ahead cannot keep an
    // instance fresh for ever.
    let said = [&seen.checked_at, &seen.finished_at]
        .into_iter()
        .flatten()
        .filter_map(|t| humantime::parse_rfc3339_weak(t).ok())
        .max();
    let reported = said.map_or(listed.modified, |said| said.min(listed.modified));
    let age = scope.now.duration_since(reported).unwrap_or_default();
    Read::Seen(Box::new(Instance {
        environment: environment.to_owned(),
        role: role.to_owned(),
        machine_id: machine_id.to_owned(),
        context: seen.context,
        tag: seen.tag,
        status: seen.status,
        stale: age > scope.stale,
        reported_at: humantime::format_rfc3339_seconds(reported).to_string(),
        age_s: age.as_secs(),
        age,
        init_tasks: seen
            .init
            .as_ref()
            .and_then(|i| i.tasks.as_ref())
            .map(|t| InitTasks {
                changed: t.changed,
                failed: t.failed,
            }),
        drift: seen
            .drift
            .as_ref()
            .map(|d| match (d.repaired, &d.error, d.changed) {
                (_, Some(_), _) => "unknown",
                (Some(true), _, _) => "repaired",
                (Some(false), _, _) => "repair failed",
                (None, None, 0) => "none",
                (None, None, _) => "drifted",
            }),
        init_script: seen.init.map(|i| printable(&i.script, 256)),
        bootlace_version: seen.bootlace_version.map(|v| printable(&v, 64)),
        hostname: seen.hostname.map(|h| printable(&h, 256)),
        error: seen.error.map(|e| printable(&e, 1024)),
        rolled_back_from: seen.rolled_back_from.map(|r| printable(&r.tag, 128)),
        via: seen.via,
        bytes_downloaded: seen.via.and(seen.bytes_downloaded),
        format_version: seen.format_version,
    }))
}

pub(crate) use crate::text::printable;

/// The counts so far.
#[derive(Default)]
struct Folded {
    groups: BTreeMap<(String, String, Option<String>), (ByStatus, u64)>,
    instances: Vec<Instance>,
    unreadable_count: u64,
    unreadable: Vec<Unreadable>,
}

impl Folded {
    fn add(&mut self, read: Read, keep_instances: bool) {
        match read {
            Read::Seen(instance) => {
                let key = (
                    instance.environment.clone(),
                    instance.role.clone(),
                    instance.tag.clone(),
                );
                let (by_status, stale) = self.groups.entry(key).or_default();
                by_status.add(instance.status);
                *stale += u64::from(instance.stale);
                if keep_instances {
                    self.instances.push(*instance);
                }
            }
            Read::Unreadable(unreadable) => {
                self.unreadable_count += 1;
                if self.unreadable.len() < NAMED_UNREADABLE {
                    tracing::warn!("unreadable report {}: {}", unreadable.key, unreadable.reason);
                    self.unreadable.push(unreadable);
                }
            }
            Read::Skipped => {}
        }
    }

    fn finish(self, store: &Store, scope: &Scope, pointers: BTreeMap<String, Marks>) -> Fleet {
        let mut groups: Vec<Group> = self
            .groups
            .into_iter()
            .map(|((environment, role, tag), (by_status, stale))| {
                let pointer = group_pointer(scope, &environment, &role);
                let marks = pointer.as_ref().and_then(|name| pointers.get(name));
                Group {
                    stable: marks.is_some_and(|m| Some(&m.stable) == tag.as_ref()),
                    target: marks.is_some_and(|m| m.target.is_some() && m.target == tag),
                    instances: by_status.ok + by_status.failed + by_status.degraded + by_status.rolled_back,
                    environment,
                    role,
                    tag,
                    by_status,
                    stale,
                    pointer,
                }
            })
            .collect();
        groups.sort_by(|a, b| {
            (&a.environment, &a.role, std::cmp::Reverse(a.instances), &a.tag).cmp(&(
                &b.environment,
                &b.role,
                std::cmp::Reverse(b.instances),
                &b.tag,
            ))
        });
        let mut instances = self.instances;
        instances.sort_by(|a, b| {
            (&a.environment, &a.role, &a.machine_id).cmp(&(&b.environment, &b.role, &b.machine_id))
        });
        let mut unreadable = self.unreadable;
        unreadable.sort_by(|a, b| a.key.cmp(&b.key));
        Fleet {
            generated_at: humantime::format_rfc3339_seconds(scope.now).to_string(),
            store: store.url().to_owned(),
            listed: store.url_of(&scope.prefix()),
            stale_after_s: scope.stale.as_secs(),
            groups,
            instances,
            pointers,
            unreadable_count: self.unreadable_count,
            unreadable,
        }
    }
}

/// The pointer a group follows: `deploy.pointer` with its environment and role filled
/// in. `None` when the template needs more (a context, a machine id): then no pointer
/// speaks for the whole group.
pub fn group_pointer(scope: &Scope, environment: &str, role: &str) -> Option<String> {
    let name = scope
        .pointer_template
        .replace("{environment}", environment)
        .replace("{role}", role);
    let valid = !name.contains('{') && crate::identity::userdata::check_name(&name).is_ok();
    valid.then_some(name)
}

/// Reads, once each, the pointers the groups follow. One that cannot be read is named
/// in a warning and marks nothing.
async fn read_pointers(
    store: &Store,
    scope: &Scope,
    groups: &BTreeMap<(String, String, Option<String>), (ByStatus, u64)>,
) -> BTreeMap<String, Marks> {
    let mut names: Vec<String> = groups
        .keys()
        .filter_map(|(environment, role, _)| group_pointer(scope, environment, role))
        .collect();
    names.sort();
    names.dedup();
    futures::stream::iter(names)
        .map(|name| async move {
            match read_marks(store, &name, &scope.keys, crate::release::clock()).await {
                Ok(marks) => marks.map(|marks| (name, marks)),
                Err(why) => {
                    tracing::warn!("pointer {name} marks nothing: {why}");
                    None
                }
            }
        })
        .buffer_unordered(16)
        .filter_map(std::future::ready)
        .collect()
        .await
}

/// Reads pointer `name`'s marks; `None` when there is no such pointer.
async fn read_marks(
    store: &Store,
    name: &str,
    keys: &crate::trust::Keys,
    now: SystemTime,
) -> Result<Option<Marks>, String> {
    let key = layout::pointer(name);
    let object = match store.get(&key, pointer::MAX_BYTES).await {
        Ok(Some(object)) => object,
        Ok(None) => return Ok(None),
        Err(err) => return Err(err.to_string()),
    };
    let pointer = crate::release::Pointer::parse(&object.bytes)?;
    // A pointer that does not verify names nothing an instance would run.
    if !keys.is_empty() {
        match crate::trust::Signed::of(keys, store, &key, &object.bytes).await {
            Ok(crate::trust::Signed::Verified(_)) => {}
            Ok(crate::trust::Signed::Bad(why)) => return Err(format!("it does not verify: {why}")),
            Ok(_) => return Err("it is not signed, and [trust] keys are set".into()),
            Err(err) => return Err(crate::error::one_line(&err)),
        }
    }
    Ok(Some(Marks {
        pointer: name.to_owned(),
        stable: pointer.tag,
        serial: pointer.serial,
        percent: pointer.rollout.as_ref().map(|r| r.effective_percent(now)),
        target: pointer.rollout.map(|r| r.tag),
    }))
}

/// An age for people: 45s, 12m, 3h, 2d.
pub fn age(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_for_people() {
        assert_eq!(age(5), "5s");
        assert_eq!(age(600), "10m");
        assert_eq!(age(3 * 3600), "3h");
        assert_eq!(age(5 * 86400), "5d");
    }

    #[test]
    fn group_pointers_fill_environment_and_role() {
        let mut scope = Scope {
            environment: None,
            role: None,
            stale: Duration::from_secs(7200),
            instances: false,
            pointer_template: "{environment}".into(),
            keys: Default::default(),
            now: SystemTime::now(),
        };
        assert_eq!(group_pointer(&scope, "prod", "web").as_deref(), Some("prod"));
        scope.pointer_template = "{environment}-{role}".into();
        assert_eq!(group_pointer(&scope, "prod", "web").as_deref(), Some("prod-web"));
        scope.pointer_template = "{environment}-{context}".into();
        assert_eq!(group_pointer(&scope, "prod", "web"), None);
    }

    #[test]
    fn prefixes_narrow_the_listing() {
        let mut scope = Scope {
            environment: Some("prod".into()),
            role: Some("web".into()),
            stale: Duration::ZERO,
            instances: false,
            pointer_template: String::new(),
            keys: Default::default(),
            now: SystemTime::now(),
        };
        assert_eq!(scope.prefix(), "reports/prod/web/");
        scope.role = None;
        assert_eq!(scope.prefix(), "reports/prod/");
        scope.environment = None;
        scope.role = Some("web".into());
        assert_eq!(scope.prefix(), "reports/");
    }
}
