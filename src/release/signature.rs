//! The signature format: a minisign signature file (`<object>.minisig`) beside each
//! signed object in the store, its size cap, the public keys it is checked against as
//! `[trust] keys` writes them, and bootlace's trusted comment. What a signature must
//! satisfy to be trusted is [`crate::trust`]'s; making one is [`super::sign`]'s.

use std::time::SystemTime;

use minisign::PublicKey;

use crate::store::Store;

/// What a signature's key is named by, beside the object it signs.
pub const SIGNATURE_SUFFIX: &str = ".minisig";
/// The most bytes of a signature read: minisign's are about 300, plus the comment.
pub const MAX_SIGNATURE_BYTES: u64 = 4 << 10;
/// `<key>.minisig`.
pub fn signature_key(key: &str) -> String {
    format!("{key}{SIGNATURE_SUFFIX}")
}

/// A public key as `[trust] keys` takes it (the base64 line of a `.pub` file).
pub fn parse_key(text: &str) -> Result<PublicKey, String> {
    let text = text.trim();
    PublicKey::from_base64(text).map_err(|_| {
        format!(
            "{:?} is not a minisign public key (the 56-character line starting with RW of a .pub file)",
            crate::text::printable(text, 64)
        )
    })
}

/// A key id as minisign prints it: 16 hex digits.
pub fn key_id(keynum: &[u8]) -> String {
    let mut bytes = [0u8; 8];
    let n = keynum.len().min(8);
    bytes[..n].copy_from_slice(&keynum[..n]);
    format!("{:016X}", u64::from_le_bytes(bytes))
}

/// The trusted comment of a signature over the object at `key` in the store named
/// `namespace`, minisign's own shape with bootlace's fields:
/// `timestamp:<unix>\tfile:<key>\tstore:<namespace>[\tserial:<n>]\thashed`. The store
/// binds a signature to the store it was made for (two stores may share a key); the
/// serial, for pointers, lets a signed change continue after an unsigned pointer was
/// written over a signed one without adopting the unsigned one's serial.
pub fn trusted_comment(namespace: &str, key: &str, serial: Option<u64>, now: SystemTime) -> String {
    let unix = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let serial = serial.map(|n| format!("\tserial:{n}")).unwrap_or_default();
    format!("timestamp:{unix}\tfile:{key}\tstore:{namespace}{serial}\thashed")
}

/// One field of a trusted comment (`file`, `store`, `serial`).
pub(crate) fn comment_field<'a>(comment: &'a str, name: &str) -> Option<&'a str> {
    comment
        .split('\t')
        .find_map(|field| field.strip_prefix(name)?.strip_prefix(':'))
}

/// The signature beside `key`, if there is one.
pub async fn read_signature(store: &Store, key: &str) -> anyhow::Result<Option<bytes::Bytes>> {
    let sig_key = signature_key(key);
    match store.get(&sig_key, MAX_SIGNATURE_BYTES).await {
        Ok(object) => Ok(object.map(|o| o.bytes)),
        // A signature too large to be one is garbage, and refused as such.
        Err(err) if err.refused => Ok(Some(bytes::Bytes::from_static(b"(over 4 KiB)"))),
        Err(err) => Err(err.into()),
    }
}
