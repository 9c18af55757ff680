//! `bootlace fleet prune`: deletes the reports of instances that stopped reporting
//! (terminated by an Auto Scaling group, say). Only objects shaped like reports
//! (`reports/<environment>/<role>/<machine_id>.json`) are ever deleted.

use std::time::Duration;

use futures::{FutureExt, StreamExt, TryStreamExt};
use serde::Serialize;

use super::{CONCURRENCY, Read, Scope, read_one};
use crate::store::{Listed, Store, layout};

/// What a prune did, or would do.
#[derive(Debug, Default, Serialize)]
pub struct Pruned {
    /// Deleted (or, on a dry run, to be deleted), with each one's age in seconds.
    pub deleted: Vec<Old>,
    /// Reports young enough to keep.
    pub kept: u64,
    /// Objects under `reports/` that are not reports: never touched.
    pub ignored: Vec<String>,
    pub dry_run: bool,
}

#[derive(Debug, Serialize)]
pub struct Old {
    pub key: String,
    pub age_s: u64,
}

/// Deletes (unless `dry_run`) every report in `scope` older than `older_than`. A
/// report's age is the one `fleet` shows; an unreadable one's is the store's own
/// last-modified time. Only a failed listing or a failed delete fails it.
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
    while let Some((key, age)) = ages.try_next().await? {
        match age {
            None if layout::report_parts(&key).is_none() => pruned.ignored.push(key),
            None => {}
            Some(age) if age > older_than => pruned.deleted.push(Old {
                key,
                age_s: age.as_secs(),
            }),
            Some(_) => pruned.kept += 1,
        }
    }
    drop(ages);
    pruned.deleted.sort_by(|a, b| a.key.cmp(&b.key));
    pruned.ignored.sort();
    if !dry_run {
        futures::stream::iter(&pruned.deleted)
            .map(|old| store.delete(&old.key))
            .buffer_unordered(CONCURRENCY)
            .try_collect::<()>()
            .await?;
    }
    Ok(pruned)
}

/// The key and, for a report in scope, its age.
async fn age_of(store: &Store, scope: &Scope, listed: Listed) -> (String, Option<Duration>) {
    let key = listed.key.clone();
    let modified = listed.modified;
    let age = match read_one(store, scope, listed).await {
        Read::Seen(instance) => Some(Duration::from_secs(instance.age_s)),
        Read::Unreadable(_) if layout::report_parts(&key).is_some() => {
            Some(scope.now.duration_since(modified).unwrap_or_default())
        }
        Read::Unreadable(_) | Read::Skipped => None,
    };
    (key, age)
}
