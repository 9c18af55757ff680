//! Signed releases on the instance (DESIGN §6.5). With `[trust] keys` set, a pointer
//! or manifest is used only when its minisign signature (`<object>.minisig`) verifies
//! against one of the keys and names that very object, and, for a pointer, when it is
//! the pointer asked for, has not expired, and is not older than one accepted before
//! (the highest serial per pointer is kept in `<state_dir>/trust.json`). Each refusal
//! names the rule that failed. The format and the cryptography are the `minisign`
//! crate's; the rules are bootlace's.

mod keys;
mod ledger;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use minisign::SignatureBox;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::release::Manifest;
use crate::release::pointer::{self, Checked, Pointer};
use crate::release::signature::{key_id, parse_key, read_signature, signature_key};
use crate::store::{Fetched, Store, StoreError, layout};

pub use keys::Keys;
pub use ledger::LEDGER_FILE;
use ledger::{Ledger, MANIFESTS_KEPT, Seen};

/// `[trust]` (DESIGN §6.5): the minisign public keys whose signatures an instance
/// accepts. Empty: releases are not checked for signatures.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Public keys as `minisign -G` and `bootlace key generate` print them (`RWQ…`).
    pub keys: Vec<String>,
    /// The name signatures bind to (a store's, shared by the operator and its
    /// instances); empty: the store's URL as configured.
    pub namespace: String,
}

impl Config {
    /// Every key must be one signatures can be checked against.
    pub fn check(&self) -> Result<(), crate::units::Invalid> {
        for (i, key) in self.keys.iter().enumerate() {
            parse_key(key).map_err(|why| crate::units::Invalid::new(format!("trust.keys[{i}]"), why))?;
        }
        Ok(())
    }
}

/// Reads of a pointer whose signature does not match it, before refusing it: a signed
/// change writes the signature first and the pointer right after, so a reader can
/// catch the new signature beside the old pointer for a moment.
pub const MISMATCH_READS: u32 = 3;

/// The highest serial a pointer may have: far from `u64::MAX`, so that a serial can
/// always grow (one forged near the top would otherwise freeze a fleet for good).
pub const MAX_SERIAL: u64 = 1 << 53;

/// How far ahead a signed pointer may expire: a year, and a day of clock skew.
pub const MAX_EXPIRY: Duration = Duration::from_secs(366 * 24 * 3600);

/// The rule a refused object broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// No signature beside the object.
    Unsigned,
    /// The signature file is not a minisign signature.
    Garbage,
    /// Signed by a key not in `[trust] keys`.
    UnknownKey,
    /// The signature does not verify over the object's bytes.
    Mismatch,
    /// The signature was made for another object.
    Object,
    /// The pointer is another pointer.
    Name,
    /// The pointer is older than one accepted before.
    Serial,
    /// The pointer has expired.
    Expires,
    /// The object is over its size cap.
    Size,
    /// `trust.json` cannot be read or written.
    Ledger,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::Unsigned => "signed",
            Rule::Garbage | Rule::Mismatch => "signature",
            Rule::UnknownKey => "key",
            Rule::Object => "object",
            Rule::Name => "name",
            Rule::Serial => "serial",
            Rule::Expires => "expires",
            Rule::Size => "size",
            Rule::Ledger => "trust.json",
        }
    }
}

/// Why an object was refused.
#[derive(Debug, thiserror::Error)]
#[error("{why} (trust rule: {})", rule.name())]
pub struct Refused {
    pub rule: Rule,
    pub why: String,
}

fn refused(rule: Rule, why: impl Into<String>) -> Refused {
    Refused {
        rule,
        why: why.into(),
    }
}

/// The rules a signed pointer's body must meet: it is pointer `name`, and it has not
/// expired at `now`.
pub fn check_pointer(name: &str, pointer: &Pointer, now: SystemTime) -> Result<(), Refused> {
    match pointer.name.as_deref() {
        Some(named) if named == name => {}
        Some(named) => {
            return Err(refused(
                Rule::Name,
                format!("it is pointer {named:?}, not {name:?} (copied from another pointer?)"),
            ));
        }
        None => return Err(refused(Rule::Name, "it names no pointer (no \"name\")")),
    }
    let expires = pointer
        .expires
        .as_deref()
        .ok_or_else(|| refused(Rule::Expires, "it has no \"expires\""))?;
    let at = humantime::parse_rfc3339_weak(expires).map_err(|_| {
        refused(
            Rule::Expires,
            format!("\"expires\" {expires:?} is not an RFC 3339 time"),
        )
    })?;
    if at <= now {
        return Err(refused(
            Rule::Expires,
            format!("it expired at {expires} (renew it: bootlace release resign --env …)"),
        ));
    }
    if at.duration_since(now).unwrap_or_default() > MAX_EXPIRY {
        return Err(refused(
            Rule::Expires,
            format!(
                "it expires at {expires}, more than a year ahead: pointers are re-signed at least yearly"
            ),
        ));
    }
    if pointer.serial > MAX_SERIAL {
        return Err(refused(
            Rule::Serial,
            format!("serial {} is over 2^53, where no pointer goes", pointer.serial),
        ));
    }
    Ok(())
}

/// What an instance checks its releases against: the keys, and the pointers it
/// accepted before.
#[derive(Debug)]
pub struct Trust {
    keys: Keys,
    ledger: PathBuf,
    /// Whether accepted pointers are recorded (`plan` changes nothing).
    record: bool,
}

impl Trust {
    /// The instance's trust from `[trust]`, its ledger in `state_dir`: `None` without
    /// keys.
    pub fn for_instance(
        config: &Config,
        state_dir: &Path,
        record: bool,
    ) -> Result<Option<Trust>, crate::error::BadInput> {
        let keys = Keys::from_config(config)?;
        Ok((!keys.is_empty()).then(|| Trust {
            keys,
            ledger: state_dir.join(LEDGER_FILE),
            record,
        }))
    }

    /// Reads pointer `name` (unless its ETag is still `e_tag`) and accepts it only if
    /// every rule holds; an accepted pointer's serial is recorded.
    pub async fn pointer(&self, store: &Store, name: &str, e_tag: Option<&str>) -> anyhow::Result<Checked> {
        let key = layout::pointer(name);
        let url = store.url_of(&key);
        let refusing = |r: Refused| anyhow::Error::new(r).context(format!("refused pointer {url}"));
        let ledger = Ledger(&self.ledger);
        let seen = ledger.read().map_err(refusing)?.pointers.remove(name);
        let mut e_tag = e_tag;
        let mut read = 0;
        let (object, id) = loop {
            read += 1;
            let fetching = store.get_if_changed(&key, e_tag, pointer::MAX_BYTES);
            // Most reads find what was accepted before (a reboot) or are answered
            // "unchanged" (the agent): the signature is read only when needed. A first
            // read takes both at once, so checking adds no round trip.
            let (fetched, signature) = match (e_tag, &seen) {
                (None, None) => {
                    let (fetched, signature) = tokio::join!(fetching, read_signature(store, &key));
                    (fetched, Some(signature?))
                }
                _ => (fetching.await, None),
            };
            let object = match fetched {
                Ok(Fetched::Object(object)) => object,
                Ok(Fetched::NotModified) => return Ok(Checked::NotModified),
                Ok(Fetched::Missing) => return Ok(Checked::Missing),
                Err(err) => return Err(too_large(err).map_err(refusing)?),
            };
            if let Some(id) = seen.as_ref().and_then(|seen| self.known(seen, &object.bytes)) {
                break (object, id);
            }
            let signature = match signature {
                Some(signature) => signature,
                None => read_signature(store, &key).await?,
            };
            match self.keys.verify(store, &key, &object.bytes, signature.as_deref()) {
                Ok(id) => break (object, id),
                Err(r) if r.rule == Rule::Mismatch && read < MISMATCH_READS => {
                    tracing::debug!("pointer {url}: {r}; reading it again");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(read))).await;
                    e_tag = None;
                }
                Err(r) => return Err(refusing(r)),
            }
        };
        let pointer =
            Pointer::parse(&object.bytes).map_err(|why| anyhow::anyhow!("reading pointer {url}: {why}"))?;
        check_pointer(name, &pointer, crate::release::clock()).map_err(refusing)?;
        let digest = digest(&object.bytes);
        if let Some(seen) = &seen {
            seen.check(pointer.serial, &digest).map_err(refusing)?;
        }
        if self.record && seen.as_ref().is_none_or(|seen| pointer.serial > seen.serial) {
            ledger
                .record(|file| {
                    if file
                        .pointers
                        .get(name)
                        .is_none_or(|seen| seen.serial < pointer.serial)
                    {
                        file.pointers
                            .insert(name.to_owned(), Seen::new(pointer.serial, &digest, &id));
                    }
                })
                .map_err(refusing)?;
        }
        tracing::debug!("pointer {url}: serial {} signed by key {id}", pointer.serial);
        Ok(Checked::Changed(Box::new(pointer), object.version.e_tag))
    }

    /// The key id that verified exactly `bytes` before, if that key is still trusted:
    /// the same bytes need not be checked again.
    fn known(&self, seen: &Seen, bytes: &[u8]) -> Option<String> {
        let trusted = self.keys.has(&seen.key_id);
        (trusted && seen.sha256 == digest(bytes)).then(|| seen.key_id.clone())
    }

    /// The rules of a pointer accepted earlier, again at `now`: its expiry passes with
    /// the clock while it stays as it was.
    pub fn still_valid(&self, name: &str, pointer: &Pointer) -> Result<(), Refused> {
        check_pointer(name, pointer, crate::release::clock())
    }

    /// Reads the manifest of `tag`, accepted only when its signature verifies (or when
    /// its bytes are those verified before).
    pub async fn manifest(&self, store: &Store, tag: &str) -> anyhow::Result<Option<Manifest>> {
        let key = layout::manifest(tag);
        let url = store.url_of(&key);
        let refusing = |r: Refused| anyhow::Error::new(r).context(format!("refused manifest {url}"));
        let ledger = Ledger(&self.ledger);
        let seen = ledger.read().map_err(refusing)?.manifests.remove(tag);
        let fetching = store.get(&key, crate::release::manifest::MAX_BYTES);
        let (fetched, signature) = match &seen {
            Some(_) => (fetching.await, None),
            None => {
                let (fetched, signature) = tokio::join!(fetching, read_signature(store, &key));
                (fetched, Some(signature?))
            }
        };
        let object = match fetched {
            Ok(Some(object)) => object,
            Ok(None) => return Ok(None),
            Err(err) => return Err(too_large(err).map_err(refusing)?),
        };
        let known = seen.as_ref().and_then(|seen| self.known(seen, &object.bytes));
        if known.is_none() {
            let signature = match signature {
                Some(signature) => signature,
                None => read_signature(store, &key).await?,
            };
            let id = self
                .keys
                .verify(store, &key, &object.bytes, signature.as_deref())
                .map_err(refusing)?;
            if self.record {
                let digest = digest(&object.bytes);
                ledger
                    .record(|file| {
                        file.manifests.insert(tag.to_owned(), Seen::new(0, &digest, &id));
                        while file.manifests.len() > MANIFESTS_KEPT {
                            let oldest = file
                                .manifests
                                .iter()
                                .min_by(|a, b| a.1.accepted_at.cmp(&b.1.accepted_at))
                                .map(|(tag, _)| tag.clone());
                            file.manifests.remove(&oldest.unwrap_or_default());
                        }
                    })
                    .map_err(refusing)?;
            }
        }
        let manifest = Manifest::parse(&object.bytes, tag)
            .map_err(|why| anyhow::anyhow!("reading manifest {url}: {why}"))?;
        Ok(Some(manifest))
    }
}

fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A store error as a refusal when the object was over its cap (the store works; the
/// object is refused unread), as itself otherwise.
fn too_large(err: StoreError) -> Result<anyhow::Error, Refused> {
    if err.refused {
        return Err(refused(Rule::Size, err.reason));
    }
    Ok(err.into())
}

/// What an operator is told of an object's signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signed {
    Unsigned,
    /// Verified against `[trust] keys`, by this key id.
    Verified(String),
    /// Signed by this key id; not checked, with no `[trust] keys` to check against.
    Unchecked(String),
    /// It does not verify, and why.
    Bad(String),
}

impl Signed {
    /// The object at `key` (its `bytes`) as `keys` see it.
    pub async fn of(keys: &Keys, store: &Store, key: &str, bytes: &[u8]) -> anyhow::Result<Signed> {
        let Some(text) = read_signature(store, key).await? else {
            return Ok(Signed::Unsigned);
        };
        if keys.is_empty() {
            let id = std::str::from_utf8(&text)
                .ok()
                .and_then(|t| SignatureBox::from_string(t).ok())
                .map(|sig| key_id(sig.keynum()));
            return Ok(match id {
                Some(id) => Signed::Unchecked(id),
                None => Signed::Bad(format!("{} is not a minisign signature", signature_key(key))),
            });
        }
        Ok(match keys.verify(store, key, bytes, Some(&text)) {
            Ok(id) => Signed::Verified(id),
            Err(refused) => Signed::Bad(refused.to_string()),
        })
    }

    /// For a pointer's mark: `serial 9, signed by K until E` and the like. `checked`:
    /// `[trust] keys` are set, so an unsigned pointer is worth saying.
    pub fn describe_pointer(&self, serial: u64, expires: Option<&str>, checked: bool) -> String {
        let until = expires.map(|e| format!(" until {e}")).unwrap_or_default();
        match self {
            Signed::Unsigned if checked => format!("serial {serial}, UNSIGNED"),
            Signed::Unsigned => format!("serial {serial}"),
            Signed::Verified(id) => format!("serial {serial}, signed by {id}{until}"),
            Signed::Unchecked(id) => format!("serial {serial}, signed by {id}, not checked: no [trust] keys"),
            Signed::Bad(_) => format!("serial {serial}, signature DOES NOT VERIFY"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_read_as_minisign_prints_them() {
        assert_eq!(key_id(&[1, 0, 0, 0, 0, 0, 0, 0]), "0000000000000001");
        assert_eq!(
            key_id(&[0xEF, 0xCD, 0xAB, 0x89, 0x67, 0x45, 0x23, 0x01]),
            "0123456789ABCDEF"
        );
    }

    #[test]
    fn the_ledger_only_rises() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LEDGER_FILE);
        let ledger = Ledger(&path);
        let raise = |serial: u64, digest: &str| {
            ledger
                .record(|file| {
                    if file.pointers.get("prod").is_none_or(|s| s.serial < serial) {
                        file.pointers
                            .insert("prod".into(), Seen::new(serial, digest, "K"));
                    }
                })
                .unwrap()
        };
        raise(5, "a");
        raise(3, "b");
        let seen = ledger.read().unwrap().pointers.remove("prod").unwrap();
        assert_eq!((seen.serial, seen.sha256.as_str()), (5, "a"));
        assert_eq!(seen.check(4, "c").unwrap_err().rule, Rule::Serial);
        assert_eq!(seen.check(5, "b").unwrap_err().rule, Rule::Serial);
        seen.check(5, "a").unwrap();
        seen.check(6, "d").unwrap();
        std::fs::write(&path, b"{").unwrap();
        assert_eq!(ledger.read().unwrap_err().rule, Rule::Ledger);
    }
}
