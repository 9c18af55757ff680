//! Moving a pointer: every change is a compare-and-swap on the object's version,
//! signed where the store is, built only on a state that verifies; a lost race re-reads
//! and tries again, a bounded number of times, so no update is ever silently lost.

use std::time::Duration;

use bytes::Bytes;
use tracing::debug;

use super::manifest::Manifest;
use super::pointer::{Pointer, read_pointer};
use super::sign::Author;
use crate::store::{Store, Versioned, layout};

/// What a pointer change did.
#[derive(Debug)]
pub struct Moved {
    pub pointer: Pointer,
    /// `false` when the pointer already named the tag and nothing was written.
    pub changed: bool,
    /// Lost races before the change went through.
    pub retries: u32,
}

/// Compare-and-swap attempts before a pointer change gives up on a busy pointer.
const ATTEMPTS: u32 = 32;

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
            return written_as(store, name, ours.clone(), Some(signature.clone()), attempt).await;
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
            return written_as(store, name, next, signature, attempt).await;
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
    let signature = crate::release::signature::read_signature(store, &key).await?;
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

/// A change that went through (`pointer` is what was written, after `retries` lost
/// races): its signature, if it has one, goes beside it.
async fn written_as(
    store: &Store,
    name: &str,
    pointer: Pointer,
    signature: Option<Bytes>,
    retries: u32,
) -> anyhow::Result<Moved> {
    if let Some(signature) = signature {
        install_signature(store, name, pointer.serial, signature).await?;
    }
    Ok(Moved {
        pointer,
        changed: true,
        retries,
    })
}

/// Puts `signature`, made for the pointer at `key` with `serial`, beside it — unless
/// the pointer has moved past `serial` since, whose writer installs its own. Only the
/// writer whose compare-and-swap won calls this, and the signature object is itself
/// replaced by compare-and-swap, read before the pointer: so a slow writer never puts
/// an older signature over a newer one, and after concurrent changes the signature
/// matches the pointer that won.
async fn install_signature(store: &Store, name: &str, serial: u64, signature: Bytes) -> anyhow::Result<()> {
    let sig_key = crate::release::signature::signature_key(&layout::pointer(name));
    for attempt in 0..ATTEMPTS {
        let before = match store
            .get(&sig_key, crate::release::signature::MAX_SIGNATURE_BYTES)
            .await
        {
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
    let sig_key = crate::release::signature::signature_key(key);
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
    let signature = crate::release::signature::read_signature(store, &key).await?;
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
            return written_as(store, name, ours, signature, attempt).await;
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
            return written_as(store, name, next, signature, attempt).await;
        }
        written = Some((next, signature));
        lost_race(store, &key, attempt).await;
    }
    anyhow::bail!(
        "changing pointer {}: it kept changing under {ATTEMPTS} attempts; nothing was written, try again",
        store.url_of(&key)
    )
}
