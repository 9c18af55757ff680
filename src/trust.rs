//! Signed releases on the instance (DESIGN §6.5). With `[trust] keys` set, a pointer
//! or manifest is used only when its minisign signature (`<object>.minisig`) verifies
//! against one of the keys and names that very object, and, for a pointer, when it is
//! the pointer asked for, has not expired, and is not older than one accepted before
//! (the highest serial per pointer is kept in `<state_dir>/trust.json`). Each refusal
//! names the rule that failed. The format and the cryptography are the `minisign`
//! crate's; the rules are bootlace's.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use minisign::{PublicKey, SignatureBox};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::release::Manifest;
use crate::release::pointer::{self, Checked, Pointer};
use crate::release::signature::{comment_field, key_id, parse_key, read_signature, signature_key};
use crate::store::{Fetched, Store, StoreError, layout};

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

/// The file under the state dir that remembers the pointers accepted.
pub const LEDGER_FILE: &str = "trust.json";
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

/// The public keys signatures are checked against, and the store namespace they must
/// have been made for (`[trust] namespace`; the store's URL when unset).
#[derive(Clone, Debug, Default)]
pub struct Keys(Vec<(PublicKey, String)>, Option<String>);

impl Keys {
    /// `[trust] keys` and `namespace` (checked when the config was read).
    pub fn from_config(config: &Config) -> Result<Keys, crate::error::BadInput> {
        let mut keys = Keys(
            Vec::new(),
            Some(config.namespace.clone()).filter(|n| !n.is_empty()),
        );
        for (i, text) in config.keys.iter().enumerate() {
            let key =
                parse_key(text).map_err(|why| crate::error::BadInput(format!("trust.keys[{i}]: {why}")))?;
            keys.add(key);
        }
        Ok(keys)
    }

    pub fn add(&mut self, key: PublicKey) {
        let id = key_id(key.keynum());
        if !self.0.iter().any(|(_, known)| *known == id) {
            self.0.push((key, id));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the key with this id is one of them.
    pub fn has(&self, id: &str) -> bool {
        self.0.iter().any(|(_, known)| known == id)
    }

    /// The namespace signatures for `store` name: `[trust] namespace`, else the store's
    /// URL as configured (`s3://my-builds/app`).
    pub fn namespace(&self, store: &Store) -> String {
        self.1.clone().unwrap_or_else(|| store.url().to_owned())
    }

    /// The serial that a signature file's trusted comment names for pointer `key` of
    /// `store`, when that comment's own signature verifies against one of the keys:
    /// the last serial signed for it, whatever the pointer beside it now says.
    pub fn signed_serial(&self, store: &Store, key: &str, signature: &[u8]) -> Option<u64> {
        use base64::Engine;
        let text = std::str::from_utf8(signature).ok()?;
        let sig = SignatureBox::from_string(text).ok()?;
        let (public, _) = self.0.iter().find(|(_, id)| *id == key_id(sig.keynum()))?;
        let lines: Vec<&str> = text.lines().collect();
        let decode = |line: &str| base64::engine::general_purpose::STANDARD.decode(line.trim()).ok();
        let (signed, global) = (decode(lines.get(1)?)?, decode(lines.get(3)?)?);
        let comment = sig.trusted_comment().ok()?;
        // minisign's global signature covers the signature's 64 bytes and the comment.
        let mut message = signed.get(10..74)?.to_vec();
        message.extend_from_slice(comment.trim().as_bytes());
        let pk = public.to_bytes();
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, pk.get(10..42)?)
            .verify(&message, &global)
            .ok()?;
        let bound = comment_field(&comment, "file") == Some(key)
            && comment_field(&comment, "store") == Some(self.namespace(store).as_str());
        bound
            .then(|| comment_field(&comment, "serial")?.parse().ok())
            .flatten()
    }

    /// Checks `signature` (the bytes of `<key>.minisig`, `None` when there is none)
    /// over `bytes`, the object at `key`. The id of the key that signed it.
    /// Pointers must name `store` (their namespace); a manifest that names another store
    /// is refused, one that names none (signed before stores were named) is accepted,
    /// since a pointer, always bound, names the archive it must have.
    pub fn verify(
        &self,
        store: &Store,
        key: &str,
        bytes: &[u8],
        signature: Option<&[u8]>,
    ) -> Result<String, Refused> {
        let sig_key = signature_key(key);
        let signature =
            signature.ok_or_else(|| refused(Rule::Unsigned, format!("it has no signature ({sig_key})")))?;
        let text = std::str::from_utf8(signature).map_err(|_| {
            refused(
                Rule::Garbage,
                format!("{sig_key} is not a minisign signature (not text)"),
            )
        })?;
        let sig = SignatureBox::from_string(text).map_err(|e| {
            refused(
                Rule::Garbage,
                format!("{sig_key} is not a minisign signature: {e}"),
            )
        })?;
        // minisign checks the comment's signature without checking its length first:
        // a short one would panic there, so it is refused here (64 bytes, 88 in base64).
        if sig.to_string().lines().nth(3).map(str::len) != Some(88) {
            return Err(refused(
                Rule::Garbage,
                format!("{sig_key} is not a minisign signature: its comment signature is not 64 bytes"),
            ));
        }
        let id = key_id(sig.keynum());
        let Some((public, _)) = self.0.iter().find(|(_, known)| *known == id) else {
            return Err(refused(
                Rule::UnknownKey,
                format!("it is signed by key {id}, which is not one of [trust] keys"),
            ));
        };
        if !sig.is_prehashed() {
            return Err(refused(
                Rule::Garbage,
                format!("{sig_key} is a legacy signature; only prehashed (ED) signatures are accepted"),
            ));
        }
        minisign::verify(public, &sig, Cursor::new(bytes), true, false, false).map_err(|e| {
            refused(
                Rule::Mismatch,
                format!("its signature by key {id} does not verify ({e}): changed after signing?"),
            )
        })?;
        let comment = sig.trusted_comment().unwrap_or_default();
        let named = comment_field(&comment, "file").unwrap_or("");
        if named != key {
            return Err(refused(
                Rule::Object,
                format!(
                    "its signature was made for {:?}, not {key}",
                    crate::text::printable(named, 200)
                ),
            ));
        }
        let namespace = self.namespace(store);
        match comment_field(&comment, "store") {
            Some(named) if named == namespace => {}
            Some(named) => {
                return Err(refused(
                    Rule::Object,
                    format!(
                        "its signature was made for store {:?}, not {namespace:?} (copied from another store?)",
                        crate::text::printable(named, 200)
                    ),
                ));
            }
            None if key.starts_with(layout::POINTERS) => {
                return Err(refused(
                    Rule::Object,
                    "its signature names no store (signed by an older bootlace: run `bootlace release resign`)",
                ));
            }
            None => {}
        }
        Ok(id)
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
        let trusted = self.keys.0.iter().any(|(_, id)| *id == seen.key_id);
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

/// `trust.json`: for each pointer name, the highest serial accepted, the digest of
/// its bytes and the key that signed them; and the manifests verified lately.
struct Ledger<'a>(&'a Path);

/// Manifests remembered as verified: enough for the releases an instance keeps.
const MANIFESTS_KEPT: usize = 64;

#[derive(Debug, Default, Serialize, Deserialize)]
struct LedgerFile {
    format_version: u32,
    #[serde(default)]
    pointers: BTreeMap<String, Seen>,
    #[serde(default)]
    manifests: BTreeMap<String, Seen>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Seen {
    /// A pointer's serial (0 for a manifest).
    #[serde(default)]
    serial: u64,
    /// The sha256 of the object's bytes.
    sha256: String,
    /// The key id that verified them.
    key_id: String,
    accepted_at: String,
}

impl Seen {
    fn new(serial: u64, digest: &str, key_id: &str) -> Seen {
        Seen {
            serial,
            sha256: digest.to_owned(),
            key_id: key_id.to_owned(),
            accepted_at: crate::release::now(),
        }
    }

    /// The rollback rule: `serial` is not below the one accepted, and an equal one
    /// comes with the same bytes.
    fn check(&self, serial: u64, digest: &str) -> Result<(), Refused> {
        if serial < self.serial {
            return Err(refused(
                Rule::Serial,
                format!(
                    "serial {serial} is lower than {}, accepted at {}: an older pointer replayed?",
                    self.serial, self.accepted_at
                ),
            ));
        }
        if serial == self.serial && digest != self.sha256 {
            return Err(refused(
                Rule::Serial,
                format!("serial {serial} was accepted before with other bytes"),
            ));
        }
        Ok(())
    }
}

impl Ledger<'_> {
    fn read(&self) -> Result<LedgerFile, Refused> {
        let broken = |why: String| {
            refused(
                Rule::Ledger,
                format!(
                    "{}: {why} (remove it to accept pointers from scratch)",
                    self.0.display()
                ),
            )
        };
        let bytes = match std::fs::read(self.0) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(LedgerFile::default()),
            Err(err) => return Err(broken(err.to_string())),
        };
        if bytes.len() > 1 << 20 {
            return Err(broken("over 1 MiB".into()));
        }
        serde_json::from_slice(&bytes).map_err(|e| broken(e.to_string()))
    }

    /// Applies `change` to the file as it is now, under a lock, and writes it
    /// atomically.
    fn record(&self, change: impl FnOnce(&mut LedgerFile)) -> Result<(), Refused> {
        let failed = |e: std::io::Error| refused(Rule::Ledger, format!("writing {}: {e}", self.0.display()));
        let lock = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.0.with_extension("lock"))
            .map_err(failed)?;
        // Held by other bootlace processes for a moment at most: waited for a bounded time.
        let mut tries = 0;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(refused(
                        Rule::Ledger,
                        format!(
                            "{} stayed locked for 2 s",
                            self.0.with_extension("lock").display()
                        ),
                    ));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(failed(e)),
            }
        }
        let mut file = self.read()?;
        change(&mut file);
        file.format_version = 1;
        let mut bytes = serde_json::to_vec_pretty(&file).expect("the ledger always serialises");
        bytes.push(b'\n');
        crate::files::write_atomic(self.0, &bytes, 0o600).map_err(failed)
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
