//! `bootlace fleet prune`: deletes the reports of instances that stopped reporting
//! (terminated by an Auto Scaling group, say). Only objects shaped like reports
//! (`reports/<environment>/<role>/<machine_id>.json`) are ever deleted.

use std::time::{Duration, SystemTime};

use futures::{FutureExt, StreamExt, TryStreamExt};
use serde::Serialize;

use super::{CONCURRENCY, Read, Scope, read_one};
use crate::store::{Listed, Store, layout};

/// What a prune did, or would do.
#[derive(Debug, Default, Serialize)]
pub struct Pruned {
    /// Deleted (or, on a dry run, to be deleted), with each one's age in seconds.
    pub deleted: Vec<Old>,
    /// Reports young enough to keep, or written again since they were listed.
    pub kept: u64,
    /// Objects under `reports/` that are not reports: never touched.
    pub ignored: Vec<String>,
    /// Reports that could not be deleted, and why.
    pub failed: Vec<super::Unreadable>,
    pub dry_run: bool,
}

#[derive(Debug, Serialize)]
pub struct Old {
    pub key: String,
    pub age_s: u64,
    /// When the store last wrote it, as listed: a report written again since is kept.
    #[serde(skip)]
    written: SystemTime,
}

/// Deletes (unless `dry_run`) every report in `scope` older than `older_than`. A
/// report's age is the one `fleet` shows; an unreadable one's is the store's own
/// last-modified time. Only a failed listing fails it; a failed delete is named.
pub async fn prune(
    store: &Store,
    scope: &Scope,
    older_than: Duration,
    dry_run: bool,
) -> anyhow::Result<Pruned> {
    let mut pruned = Pruned {
        dry_run,
        ..Pruned::default()
    };
    let mut ages = store
        .list_all(&scope.prefix())
        .map_ok(|listed| age_of(store, scope, listed).map(Ok))
        .try_buffer_unordered(CONCURRENCY);
    while let Some((key, written, age)) = ages.try_next().await? {
        match age {
            None if layout::report_parts(&key).is_none() => pruned.ignored.push(key),
            None => {}
            Some(age) if age > older_than => pruned.deleted.push(Old {
                key,
                age_s: age.as_secs(),
                written,
            }),
            Some(_) => pruned.kept += 1,
        }
    }
    drop(ages);
    pruned.deleted.sort_by(|a, b| a.key.cmp(&b.key));
    pruned.ignored.sort();
    if dry_run {
        return Ok(pruned);
    }
    let outcomes: Vec<(usize, Result<bool, String>)> =
        futures::stream::iter(pruned.deleted.iter().enumerate())
            .map(|(i, old)| delete_unless_rewritten(store, old).map(move |outcome| (i, outcome)))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
    let mut keep = vec![true; pruned.deleted.len()];
    for (i, outcome) in outcomes {
        match outcome {
            Ok(true) => {}
            Ok(false) => {
                keep[i] = false;
                pruned.kept += 1;
            }
            Err(reason) => {
                keep[i] = false;
                pruned.failed.push(super::Unreadable {
                    key: pruned.deleted[i].key.clone(),
                    reason,
                });
            }
        }
    }
    let mut keep = keep.into_iter();
    pruned.deleted.retain(|_| keep.next().unwrap_or(false));
    pruned.failed.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(pruned)
}

/// Deletes `old` unless the store wrote it again after it was listed (its instance
/// came back): `Ok(false)` then.
async fn delete_unless_rewritten(store: &Store, old: &Old) -> Result<bool, String> {
    match store.modified(&old.key).await {
        Ok(Some(now)) if now > old.written => return Ok(false),
        Ok(None) => return Ok(true),
        Ok(Some(_)) => {}
        Err(err) => return Err(super::printable(&err.reason, 300)),
    }
    store
        .delete(&old.key)
        .await
        .map(|()| true)
        .map_err(|e| super::printable(&e.reason, 300))
}

/// The key, when the store wrote it, and, for a report in scope, its age.
async fn age_of(store: &Store, scope: &Scope, listed: Listed) -> (String, SystemTime, Option<Duration>) {
    let key = listed.key.clone();
    let written = listed.modified;
    let age = match read_one(store, scope, listed).await {
        Read::Seen(instance) => Some(instance.age),
        Read::Unreadable(_) if layout::report_parts(&key).is_some() => {
            Some(scope.now.duration_since(written).unwrap_or_default())
        }
        Read::Unreadable(_) | Read::Skipped => None,
    };
    (key, written, age)
}
