//! The public keys signatures are checked against, and the checking itself: a
//! signature must verify against one of them and name the object, its store and, for a
//! pointer, its serial in its trusted comment.

use std::io::Cursor;

use minisign::{PublicKey, SignatureBox};

use super::{Config, Refused, Rule, refused};
use crate::release::signature::{comment_field, key_id, parse_key, signature_key};
use crate::store::{Store, layout};

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
