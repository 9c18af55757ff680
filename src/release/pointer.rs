//! Pointers (`pointers/<name>.json`, DESIGN §4): which tag an environment runs. Every
//! change is a compare-and-swap on the object's version; a lost race re-reads and tries
//! again, a bounded number of times, so no update is ever silently lost.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tracing::debug;

use super::manifest::Manifest;
use super::rollout::{Placement, Rollout};
use super::sign::Author;
use super::{check_sha256, check_tag};
use crate::store::{Store, Versioned, layout};

pub const FORMAT_VERSION: u32 = 1;
/// The format of a pointer that carries a rollout (DESIGN §6.3).
pub const ROLLOUT_FORMAT_VERSION: u32 = 2;
/// The most bytes of a pointer object read (DESIGN §6.5): a larger one is refused unread.
pub const MAX_BYTES: u64 = 64 << 10;
/// Past states kept in `history`.
pub const HISTORY: usize = 20;
/// Compare-and-swap attempts before a pointer change gives up on a busy pointer.
const ATTEMPTS: u32 = 32;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pointer {
    pub format_version: u32,
    pub tag: String,
    pub sha256: String,
    pub size: u64,
    /// Increases by one at every change.
    pub serial: u64,
    pub updated_at: String,
    pub updated_by: String,
    /// The pointer's earlier stable tags, newest first.
    pub history: Vec<HistoryEntry>,
    /// A staged rollout of another tag to a share of the instances (format 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// Why a rollout in the object was set aside as unreadable: the stable tag is
    /// still followed, and instances report this.
    #[serde(skip)]
    pub ignored_rollout: Option<String>,
    /// The pointer this is (signed pointers, DESIGN §6.5): a copy of another pointer is
    /// refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// When a signed pointer stops being accepted, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

/// What a pointer assigns to one instance: the release it should run, and its place
/// in the rollout when there is one.
#[derive(Clone, Debug)]
pub struct Assigned {
    pub tag: String,
    pub sha256: String,
    pub size: u64,
    pub placement: Option<Placement>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub tag: String,
    pub serial: u64,
    pub updated_at: String,
}

/// What a pointer change did.
#[derive(Debug)]
pub struct Moved {
    pub pointer: Pointer,
    /// `false` when the pointer already named the tag and nothing was written.
    pub changed: bool,
    /// Lost races before the change went through.
    pub retries: u32,
}

/// What a conditional read of a pointer found.
#[derive(Debug)]
pub enum Checked {
    /// The pointer, and the ETag to name in the next check.
    Changed(Box<Pointer>, Option<String>),
    NotModified,
    Missing,
}

impl Pointer {
    /// Reads pointer `name` unless its ETag is still `e_tag`: an unchanged pointer
    /// costs one request and no body.
    pub async fn check(store: &Store, name: &str, e_tag: Option<&str>) -> anyhow::Result<Checked> {
        let key = layout::pointer(name);
        let object = match store.get_if_changed(&key, e_tag, MAX_BYTES).await? {
            crate::store::Fetched::Object(object) => object,
            crate::store::Fetched::NotModified => return Ok(Checked::NotModified),
            crate::store::Fetched::Missing => return Ok(Checked::Missing),
        };
        let pointer = Pointer::parse(&object.bytes)
            .map_err(|why| anyhow::anyhow!("reading pointer {}: {why}", store.url_of(&key)))?;
        Ok(Checked::Changed(Box::new(pointer), object.version.e_tag))
    }

    /// Reads pointer `name`; `None` when there is none yet.
    pub async fn load(store: &Store, name: &str) -> anyhow::Result<Option<Pointer>> {
        Ok(read_pointer(store, name).await?.map(|(pointer, _)| pointer))
    }

    /// The state that follows `previous` (or nothing) when everyone moves to
    /// `manifest`, ending any rollout.
    fn next(previous: Option<&Pointer>, manifest: &Manifest, now: &str, by: &str) -> Pointer {
        let desired = Pointer {
            format_version: FORMAT_VERSION,
            tag: manifest.tag.clone(),
            sha256: manifest.sha256.clone(),
            size: manifest.size,
            serial: 1,
            updated_at: String::new(),
            updated_by: String::new(),
            history: Vec::new(),
            rollout: None,
            ignored_rollout: None,
            name: None,
            expires: None,
        };
        match previous {
            Some(previous) => previous.successor(desired, now, by),
            None => Pointer {
                updated_at: now.to_owned(),
                updated_by: by.to_owned(),
                ..desired
            },
        }
    }

    /// `desired`'s tag, digest and rollout as the state after `self`: the serial one
    /// higher, and `self`'s tag in the history when the stable tag changes.
    pub fn successor(&self, desired: Pointer, now: &str, by: &str) -> Pointer {
        let history = if desired.tag == self.tag {
            self.history.clone()
        } else {
            let mut history = vec![HistoryEntry {
                tag: self.tag.clone(),
                serial: self.serial,
                updated_at: self.updated_at.clone(),
            }];
            history.extend(self.history.iter().take(HISTORY - 1).cloned());
            history
        };
        Pointer {
            format_version: if desired.rollout.is_some() {
                ROLLOUT_FORMAT_VERSION
            } else {
                FORMAT_VERSION
            },
            serial: self.serial.saturating_add(1),
            updated_at: now.to_owned(),
            updated_by: by.to_owned(),
            history,
            ..desired
        }
    }

    /// This pointer as it applies to one instance: `assigned` as its tag, no rollout,
    /// and as its serial the one a failure of that tag is recorded under (for a
    /// rollout's target, the serial its attempt began with).
    pub fn applied(&self, assigned: &Assigned) -> Pointer {
        let serial = match (&self.rollout, &assigned.placement) {
            (Some(rollout), Some(placement)) if placement.is_in && rollout.attempt_serial > 0 => {
                rollout.attempt_serial
            }
            _ => self.serial,
        };
        Pointer {
            tag: assigned.tag.clone(),
            sha256: assigned.sha256.clone(),
            size: assigned.size,
            serial,
            rollout: None,
            ..self.clone()
        }
    }

    /// The stable tag, whatever the rollout says.
    pub fn assign_stable(&self) -> Assigned {
        Assigned {
            tag: self.tag.clone(),
            sha256: self.sha256.clone(),
            size: self.size,
            placement: None,
        }
    }

    /// The release this pointer assigns to `machine_id` at `now`: the rollout's target
    /// when the instance is in it, the stable tag otherwise.
    pub fn assign(&self, machine_id: &str, now: std::time::SystemTime) -> Assigned {
        let Some(rollout) = &self.rollout else {
            return Assigned {
                tag: self.tag.clone(),
                sha256: self.sha256.clone(),
                size: self.size,
                placement: None,
            };
        };
        let placement = rollout.place(machine_id, now);
        let (tag, sha256, size) = if placement.is_in {
            (&rollout.tag, &rollout.sha256, rollout.size)
        } else {
            (&self.tag, &self.sha256, self.size)
        };
        Assigned {
            tag: tag.clone(),
            sha256: sha256.clone(),
            size,
            placement: Some(placement),
        }
    }

    pub fn to_json(&self) -> Bytes {
        let mut bytes = serde_json::to_vec_pretty(self).expect("a pointer always serialises");
        bytes.push(b'\n');
        Bytes::from(bytes)
    }
}

async fn read_pointer(store: &Store, name: &str) -> anyhow::Result<Option<(Pointer, Versioned)>> {
    let key = layout::pointer(name);
    let Some(object) = store.get(&key, MAX_BYTES).await? else {
        return Ok(None);
    };
    let pointer = Pointer::parse(&object.bytes)
        .map_err(|why| anyhow::anyhow!("reading pointer {}: {why}", store.url_of(&key)))?;
    Ok(Some((pointer, object)))
}

impl Pointer {
    /// A pointer from its bytes, checked: its format version, and every tag and digest
    /// it names, with the rules the command line applies, before anything uses them.
    pub fn parse(bytes: &[u8]) -> Result<Pointer, String> {
        let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        // A rollout that cannot be read is set aside, not the pointer: everyone
        // stays on the stable tag, and the reason is carried along.
        let rollout = value
            .as_object_mut()
            .and_then(|o| o.remove("rollout"))
            .filter(|r| !r.is_null());
        let mut pointer: Pointer = serde_json::from_value(value).map_err(|e| e.to_string())?;
        let expected = if rollout.is_some() {
            ROLLOUT_FORMAT_VERSION
        } else {
            pointer
                .format_version
                .clamp(FORMAT_VERSION, ROLLOUT_FORMAT_VERSION)
        };
        if pointer.format_version != expected {
            return Err(format!(
                "format_version {}; this bootlace reads version {FORMAT_VERSION}, and \
                 {ROLLOUT_FORMAT_VERSION} with a rollout",
                pointer.format_version
            ));
        }
        if let Some(rollout) = rollout {
            match serde_json::from_value::<Rollout>(rollout)
                .map_err(|e| format!("rollout: {e}"))
                .and_then(|r| r.check().map(|()| r))
            {
                Ok(rollout) => pointer.rollout = Some(rollout),
                Err(why) => {
                    tracing::warn!("ignoring the pointer's rollout: {why}");
                    pointer.ignored_rollout = Some(format!("the pointer's rollout is ignored: {why}"));
                }
            }
        }
        check_tag(&pointer.tag).map_err(|e| e.0)?;
        check_sha256(&pointer.sha256)?;
        for entry in &mut pointer.history {
            check_tag(&entry.tag).map_err(|e| format!("history: {}", e.0))?;
            entry.updated_at = crate::text::printable(&entry.updated_at, 64);
        }
        // Free text shown to operators: made printable (the bytes a signature covers
        // are not touched).
        pointer.updated_at = crate::text::printable(&pointer.updated_at, 64);
        pointer.updated_by = crate::text::printable(&pointer.updated_by, 256);
        pointer.expires = pointer.expires.map(|e| crate::text::printable(&e, 64));
        pointer.name = pointer.name.map(|n| crate::text::printable(&n, 256));
        Ok(pointer)
    }
}

/// Moves pointer `name` to the release that `choose` picks from its current state.
/// The choice is made once, on the first read: after a lost race the same release is
/// written over the state that won (or nothing, if that state already names it), so
/// two concurrent rollbacks cannot undo each other.
pub async fn move_pointer<F, Fut>(
    store: &Store,
    name: &str,
    author: &Author,
    choose: F,
) -> anyhow::Result<Moved>
where
    F: FnOnce(Option<Pointer>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Manifest>>,
{
    let key = layout::pointer(name);
    refuse_unsigned_change(store, &key, author).await?;
    let (mut current, mut trusted) = read_base(store, name, author).await?;
    let manifest = choose(current.as_ref().map(|(pointer, _)| pointer.clone())).await?;
    let mut written: Option<(Pointer, Bytes)> = None;
    for attempt in 0..ATTEMPTS {
        let previous = current.as_ref().map(|(pointer, _)| pointer);
        // A signed write of ours that landed though its answer was lost: its
        // signature still has to go beside it.
        if let (Some((ours, signature)), Some(p)) = (&written, previous)
            && ours == p
        {
            install_signature(store, name, ours.serial, signature.clone()).await?;
            return Ok(Moved {
                pointer: ours.clone(),
                changed: true,
                retries: attempt,
            });
        }
        if let Some(p) = previous.filter(|p| {
            p.tag == manifest.tag
                && p.sha256 == manifest.sha256
                && p.rollout.is_none()
                && p.ignored_rollout.is_none()
                // A signed pointer whose signature does not match is written anew.
                && trusted
        }) {
            return Ok(Moved {
                pointer: p.clone(),
                changed: false,
                retries: attempt,
            });
        }
        // What does not verify is not built on: its serial is kept (instances
        // accept only higher ones), its history is not.
        let base = previous.map(|p| match trusted {
            true => p.clone(),
            false => Pointer {
                history: Vec::new(),
                ..p.clone()
            },
        });
        let mut next = Pointer::next(base.as_ref(), &manifest, &super::now(), &author.who);
        if !trusted {
            next.serial = serial_after_unverified(store, name, author, next.serial - 1).await?;
        }
        let (next, bytes, signature) = seal(store, &key, name, author, next)?;
        if store
            .swap(&key, bytes, current.as_ref().map(|(_, read)| read))
            .await?
        {
            if let Some(signature) = signature {
                install_signature(store, name, next.serial, signature).await?;
            }
            return Ok(Moved {
                pointer: next,
                changed: true,
                retries: attempt,
            });
        }
        // Lost the race (or our own write landed and its answer was lost: the next
        // round finds it, and installs its signature if it is signed, or reports no
        // change if it is not).
        if let Some(signature) = signature {
            written = Some((next, signature));
        }
        lost_race(store, &key, attempt).await;
        (current, trusted) = read_base(store, name, author).await?;
    }
    anyhow::bail!(
        "moving pointer {}: it kept changing under {ATTEMPTS} attempts; nothing was written, try again",
        store.url_of(&key)
    )
}

/// Reads pointer `name` for a change to build on, and whether it verifies against
/// the author's keys (always, for an unsigned author). A signature that does not match
/// may be a change in flight (its signature follows the pointer): it is read again
/// before being judged.
async fn read_base(
    store: &Store,
    name: &str,
    author: &Author,
) -> anyhow::Result<(Option<(Pointer, Versioned)>, bool)> {
    let key = layout::pointer(name);
    let mut reads = 0;
    loop {
        reads += 1;
        let current = read_pointer(store, name).await?;
        let Some(read) = &current else {
            return Ok((current, true));
        };
        match verify_base(store, name, author, read).await? {
            Ok(()) => return Ok((current, true)),
            Err(r) if r.rule == crate::trust::Rule::Mismatch && reads < crate::trust::MISMATCH_READS => {
                debug!("pointer {}: {r}; reading it again", store.url_of(&key));
                tokio::time::sleep(Duration::from_millis(200 * u64::from(reads))).await;
            }
            Err(r) => {
                untrusted_base(store, name, author, r)?;
                return Ok((current, false));
            }
        }
    }
}

/// With a signing key: `next` as a signed pointer (its `name` and `expires` set) and
/// its signature, to be installed once the pointer is in place. Without: `next` as it
/// is. The pointer's bytes to write.
fn seal(
    store: &Store,
    key: &str,
    name: &str,
    author: &Author,
    mut next: Pointer,
) -> anyhow::Result<(Pointer, Bytes, Option<Bytes>)> {
    let Some(signer) = &author.signer else {
        next.name = None;
        next.expires = None;
        let bytes = next.to_json();
        return Ok((next, bytes, None));
    };
    if next.serial > crate::trust::MAX_SERIAL {
        anyhow::bail!(
            "pointer {}: serial {} would pass 2^53, where instances refuse pointers",
            store.url_of(key),
            next.serial
        );
    }
    next.name = Some(name.to_owned());
    next.expires = Some(author.expires.at(std::time::SystemTime::now()));
    let bytes = next.to_json();
    let signature = signer.sign(&author.keys.namespace(store), key, &bytes, Some(next.serial))?;
    Ok((next, bytes, Some(signature)))
}

/// The variable that gives a signed change the serial to continue from when the
/// pointer in the store does not verify and no signature beside it says.
pub const SERIAL_FLOOR_VAR: &str = "BOOTLACE_SERIAL_FLOOR";

/// The serial a signed change writes over a pointer that does not verify: never one
/// built on the serial it carries (anyone who can write the store can write that one,
/// 2^64 − 2 included, and instances accept only higher ones), but one past the last
/// serial signed for it, as the signature beside it says (its trusted comment is
/// checked on its own), or past `BOOTLACE_SERIAL_FLOOR`.
async fn serial_after_unverified(
    store: &Store,
    name: &str,
    author: &Author,
    unverified: u64,
) -> anyhow::Result<u64> {
    let key = layout::pointer(name);
    let signature = crate::trust::read_signature(store, &key).await?;
    let signed = signature.and_then(|s| author.keys.signed_serial(store, &key, &s));
    let floor = match std::env::var(SERIAL_FLOOR_VAR) {
        Ok(text) => Some(text.trim().parse::<u64>().map_err(|_| {
            crate::error::BadInput(format!(
                "{SERIAL_FLOOR_VAR}={text:?} is not a serial (a whole number)"
            ))
        })?),
        Err(_) => None,
    };
    match signed.max(floor) {
        Some(last) if last < crate::trust::MAX_SERIAL => {
            tracing::warn!(
                "pointer {}: not building on its serial {unverified}, which does not verify; continuing from {last}",
                store.url_of(&key)
            );
            Ok(last + 1)
        }
        Some(last) => anyhow::bail!("pointer {}: serial {last} is at the cap (2^53)", store.url_of(&key)),
        None => Err(crate::error::BadInput(format!(
            "pointer {} does not verify, and no signature beside it names the last serial signed: a signed \
             change will not build on its serial {unverified}, which anyone who can write the store could have \
             chosen. Give the serial to continue from: {SERIAL_FLOOR_VAR}=N, the highest an instance accepted \
             (its trust.json), or 0 for a fleet that never accepted one",
            store.url_of(&key)
        ))
        .into()),
    }
}

/// Puts `signature`, made for the pointer at `key` with `serial`, beside it — unless
/// the pointer has moved past `serial` since, whose writer installs its own. Only the
/// writer whose compare-and-swap won calls this, and the signature object is itself
/// replaced by compare-and-swap, read before the pointer: so a slow writer never puts
/// an older signature over a newer one, and after concurrent changes the signature
/// matches the pointer that won.
async fn install_signature(store: &Store, name: &str, serial: u64, signature: Bytes) -> anyhow::Result<()> {
    let sig_key = crate::trust::signature_key(&layout::pointer(name));
    for attempt in 0..ATTEMPTS {
        let before = match store.get(&sig_key, crate::trust::MAX_SIGNATURE_BYTES).await {
            Ok(before) => before,
            // Too large to be a signature: replaced as it is.
            Err(err) if err.refused => {
                store.put(&sig_key, signature).await?;
                return Ok(());
            }
            Err(err) => return Err(err.into()),
        };
        if read_pointer(store, name)
            .await?
            .is_some_and(|(pointer, _)| pointer.serial > serial)
        {
            return Ok(());
        }
        if store.swap(&sig_key, signature.clone(), before.as_ref()).await? {
            return Ok(());
        }
        lost_race(store, &sig_key, attempt).await;
    }
    anyhow::bail!(
        "writing {}: it kept changing under {ATTEMPTS} attempts; the pointer is written but instances \
         that check signatures refuse it until the next signed change",
        store.url_of(&sig_key)
    )
}

/// An unsigned change to a signed pointer would leave it with a signature that no
/// longer matches, and every instance that checks signatures would refuse it.
pub(crate) async fn refuse_unsigned_change(store: &Store, key: &str, author: &Author) -> anyhow::Result<()> {
    if author.signer.is_some() {
        return Ok(());
    }
    let sig_key = crate::trust::signature_key(key);
    if store.size_of(&sig_key).await?.is_some() {
        return Err(crate::error::BadInput(format!(
            "pointer {} is signed ({sig_key} exists): sign this change with --sign-key or {} \
             (or delete the signature to stop signing it)",
            store.url_of(key),
            super::sign::SIGN_KEY_VAR
        ))
        .into());
    }
    Ok(())
}

/// Whether pointer `name` as read (parsed, and its bytes) verifies against the
/// author's keys and names itself, when the author signs (an unsigned author takes
/// what it reads).
async fn verify_base(
    store: &Store,
    name: &str,
    author: &Author,
    (pointer, read): &(Pointer, Versioned),
) -> anyhow::Result<Result<(), crate::trust::Refused>> {
    if author.signer.is_none() {
        return Ok(Ok(()));
    }
    let key = layout::pointer(name);
    let signature = crate::trust::read_signature(store, &key).await?;
    Ok(author
        .keys
        .verify(store, &key, &read.bytes, signature.as_deref())
        .and_then(|_| match pointer.name.as_deref() == Some(name) {
            true => Ok(()),
            false => Err(crate::trust::Refused {
                rule: crate::trust::Rule::Name,
                why: format!("it does not name itself {name:?}"),
            }),
        }))
}

/// What a signed change does with a pointer that does not verify: one that depends on
/// what the pointer says refuses it; another writes a signed pointer over it, and
/// says so.
fn untrusted_base(
    store: &Store,
    name: &str,
    author: &Author,
    refused: crate::trust::Refused,
) -> anyhow::Result<()> {
    let url = store.url_of(&layout::pointer(name));
    if author.needs_verified_base {
        anyhow::bail!(
            "pointer {url} does not verify against the signing key or [trust] keys: {refused}; \
             `bootlace release promote TAG --env … --sign-key …` writes a fresh signed one"
        );
    }
    tracing::warn!(
        "pointer {url} does not verify ({refused}); a signed pointer is written over it, without its history"
    );
    Ok(())
}

/// After a lost compare-and-swap: a short, growing, random pause before reading again.
async fn lost_race(store: &Store, key: &str, attempt: u32) {
    debug!(
        "pointer {} changed under us (attempt {}); reading it again",
        store.url_of(key),
        attempt + 1
    );
    tokio::time::sleep(Duration::from_millis(
        5 + fastrand::u64(..20 * u64::from(attempt + 1)),
    ))
    .await;
}

/// Changes pointer `name` (which must exist) to what `edit` makes of its current
/// state: `Ok(None)` leaves it as it is. Unlike [`move_pointer`], `edit` runs again on
/// the state that won after a lost race, so a change relative to the current state
/// (a rollout's percentage, a halt) is never applied to a stale one, nor lost.
pub async fn edit_pointer<F>(store: &Store, name: &str, author: &Author, mut edit: F) -> anyhow::Result<Moved>
where
    F: FnMut(&Pointer) -> anyhow::Result<Option<Pointer>>,
{
    let key = layout::pointer(name);
    refuse_unsigned_change(store, &key, author).await?;
    let mut written: Option<(Pointer, Option<Bytes>)> = None;
    for attempt in 0..ATTEMPTS {
        let (current, trusted) = read_base(store, name, author).await?;
        let (current, read) = current.ok_or_else(|| anyhow::anyhow!("no pointer {}", store.url_of(&key)))?;
        // Our own write landed, though its answer was lost: done, not to be redone
        // (but its signature still goes beside it).
        if let Some((ours, signature)) = written.take_if(|(ours, _)| *ours == current) {
            if let Some(signature) = signature {
                install_signature(store, name, ours.serial, signature).await?;
            }
            return Ok(Moved {
                pointer: ours,
                changed: true,
                retries: attempt,
            });
        }
        let desired = match edit(&current)? {
            Some(desired) => desired,
            // Nothing to change, but a signed pointer whose signature does not match
            // is renewed.
            None if !trusted => current.clone(),
            None => {
                return Ok(Moved {
                    pointer: current,
                    changed: false,
                    retries: attempt,
                });
            }
        };
        let mut next = current.successor(desired, &super::now(), &author.who);
        if !trusted {
            next.serial = serial_after_unverified(store, name, author, current.serial).await?;
        }
        let (next, bytes, signature) = seal(store, &key, name, author, next)?;
        if store.swap(&key, bytes, Some(&read)).await? {
            if let Some(signature) = signature {
                install_signature(store, name, next.serial, signature).await?;
            }
            return Ok(Moved {
                pointer: next,
                changed: true,
                retries: attempt,
            });
        }
        written = Some((next, signature));
        lost_race(store, &key, attempt).await;
    }
    anyhow::bail!(
        "changing pointer {}: it kept changing under {ATTEMPTS} attempts; nothing was written, try again",
        store.url_of(&key)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(tag: &str) -> Manifest {
        Manifest {
            format_version: 1,
            tag: tag.into(),
            archive: format!("blobs/sha256/{tag}.tar.zst"),
            compression: crate::archive::Compression::Zstd,
            sha256: format!("sha-{tag}"),
            size: 10,
            files: 1,
            unpacked_bytes: 5,
            created_at: "2026-01-01T00:00:00Z".into(),
            created_by: "test".into(),
            source_revision: None,
        }
    }

    #[test]
    fn serial_and_history_advance() {
        let first = Pointer::next(None, &manifest("v1"), "t1", "me");
        assert_eq!((first.serial, first.history.len()), (1, 0));
        let mut pointer = first;
        for i in 2..=30 {
            pointer = Pointer::next(
                Some(&pointer),
                &manifest(&format!("v{i}")),
                &format!("t{i}"),
                "me",
            );
        }
        assert_eq!(pointer.serial, 30);
        assert_eq!(pointer.history.len(), HISTORY);
        assert_eq!(
            pointer.history[0],
            HistoryEntry {
                tag: "v29".into(),
                serial: 29,
                updated_at: "t29".into()
            }
        );
        assert_eq!(pointer.history[HISTORY - 1].serial, 10);
    }

    #[test]
    fn json_has_exactly_the_design_fields() {
        let pointer = Pointer::next(None, &manifest("v1"), "t1", "me");
        let json: serde_json::Value = serde_json::from_slice(&pointer.to_json()).unwrap();
        let mut keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected = [
            "format_version",
            "tag",
            "sha256",
            "size",
            "serial",
            "updated_at",
            "updated_by",
            "history",
        ];
        keys.sort();
        expected.sort();
        assert_eq!(keys, expected);
    }
}
