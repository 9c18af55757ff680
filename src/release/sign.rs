//! The operator's side of signed releases (DESIGN §6.5): with `--sign-key`, every
//! manifest and pointer written gets a minisign signature of its exact bytes beside it
//! (`<object>.minisig`, prehashed `ED`, a trusted comment naming the object), and a
//! signed pointer holds its own `name` and an `expires`.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use minisign::{PublicKey, SecretKey, SecretKeyBox};

use crate::error::BadInput;
use crate::keys::PASSWORD_VAR;
use crate::trust::{self, Keys};

/// The variable `--sign-key` also comes from.
pub const SIGN_KEY_VAR: &str = "BOOTLACE_SIGN_KEY";
/// How long a signed pointer is accepted when `--expires` does not say.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(90 * 24 * 3600);
/// The most bytes of a secret key file read.
const MAX_KEY_BYTES: u64 = 64 << 10;

/// A secret key, decrypted, ready to sign.
pub struct Signer {
    secret: SecretKey,
    public: PublicKey,
    pub key_id: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", self.key_id)
    }
}

impl Signer {
    /// Reads the minisign secret key at `path`, asking for its password (from
    /// `BOOTLACE_SIGN_PASSWORD`, or on the terminal) when it is encrypted.
    pub fn load(path: &Path) -> anyhow::Result<Signer> {
        let shown = path.display();
        let meta = std::fs::metadata(path).map_err(|e| BadInput(format!("signing key {shown}: {e}")))?;
        if !meta.is_file() {
            return Err(BadInput(format!("signing key {shown} is not a file")).into());
        }
        if meta.len() > MAX_KEY_BYTES {
            return Err(BadInput(format!(
                "signing key {shown} is over 64 KiB: not a minisign secret key"
            ))
            .into());
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| BadInput(format!("signing key {shown}: {e}")))?;
        let not_a_key =
            |e: minisign::PError| BadInput(format!("signing key {shown} is not a minisign secret key: {e}"));
        let secret =
            match SecretKey::from_unencrypted_box(SecretKeyBox::from_string(&text).map_err(not_a_key)?) {
                Ok(secret) => secret,
                Err(e) if e.to_string().contains("might be encrypted") => {
                    let password = password(path)?;
                    SecretKey::from_box(
                        SecretKeyBox::from_string(&text).map_err(not_a_key)?,
                        Some(password),
                    )
                    .map_err(|e| match e.kind() {
                        minisign::ErrorKind::Verify => {
                            BadInput(format!("signing key {shown}: wrong password"))
                        }
                        _ => not_a_key(e),
                    })?
                }
                Err(e) if e.to_string().contains("Corrupted key") => {
                    unchecked_unencrypted(&text).ok_or_else(|| not_a_key(e))?
                }
                Err(e) => return Err(not_a_key(e).into()),
            };
        let public = PublicKey::from_secret_key(&secret).map_err(not_a_key)?;
        let key_id = super::signature::key_id(public.keynum());
        Ok(Signer {
            secret,
            public,
            key_id,
        })
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The signature file's bytes for `bytes`, the object at `key`.
    /// A signature of `bytes`, the object at `key` of the store named `namespace`
    /// (and, for a pointer, its `serial`).
    pub fn sign(
        &self,
        namespace: &str,
        key: &str,
        bytes: &[u8],
        serial: Option<u64>,
    ) -> anyhow::Result<Bytes> {
        let comment = super::signature::trusted_comment(namespace, key, serial, SystemTime::now());
        let untrusted = format!("signature from bootlace secret key {}", self.key_id);
        let signature = minisign::sign(
            Some(&self.public),
            &self.secret,
            Cursor::new(bytes),
            Some(&comment),
            Some(&untrusted),
        )
        .map_err(|e| anyhow::anyhow!("signing {key}: {e}"))?;
        Ok(Bytes::from(signature.into_string()))
    }
}

/// The password of an encrypted secret key: `BOOTLACE_SIGN_PASSWORD`, or asked on the
/// terminal. Never a flag.
/// An unencrypted key as the minisign CLI writes it (`minisign -G -W`, 0.11): its
/// checksum left as zeros, which the minisign crate takes for corruption. Accepted
/// only with no key derivation, an all-zero checksum, and when it signs what its own
/// public half verifies.
fn unchecked_unencrypted(text: &str) -> Option<SecretKey> {
    use base64::Engine;
    let line = text.lines().nth(1)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(line.trim())
        .ok()?;
    let unencrypted = bytes.get(2..4)? == [0, 0];
    let zero_checksum = bytes.len() >= 32 && bytes[bytes.len() - 32..].iter().all(|b| *b == 0);
    if !(unencrypted && zero_checksum) {
        return None;
    }
    let secret = SecretKey::from_bytes(&bytes).ok()?;
    let public = PublicKey::from_secret_key(&secret).ok()?;
    let probe = b"bootlace key check";
    let signature = minisign::sign(Some(&public), &secret, Cursor::new(probe), None, None).ok()?;
    minisign::verify(&public, &signature, Cursor::new(probe), true, false, false).ok()?;
    Some(secret)
}

fn password(path: &Path) -> anyhow::Result<String> {
    if let Ok(password) = std::env::var(PASSWORD_VAR) {
        return Ok(password);
    }
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return Err(BadInput(format!(
            "signing key {} is encrypted: set {PASSWORD_VAR}, or run on a terminal",
            path.display()
        ))
        .into());
    }
    Ok(rpassword::prompt_password(format!(
        "password for {}: ",
        path.display()
    ))?)
}

/// When a signed pointer written now stops being accepted.
#[derive(Clone, Copy, Debug)]
pub enum Expiry {
    After(Duration),
    At(SystemTime),
}

impl Default for Expiry {
    fn default() -> Self {
        Expiry::After(DEFAULT_EXPIRY)
    }
}

impl Expiry {
    /// `--expires`: a duration from now (`90d`) or an RFC 3339 time, which must be
    /// in the future.
    pub fn parse(text: &str, now: SystemTime) -> Result<Expiry, BadInput> {
        let too_far = || {
            BadInput(format!(
                "--expires {text}: at most a year ahead (instances refuse pointers that expire later; \
                 re-sign with `bootlace release resign`)"
            ))
        };
        if let Ok(at) = humantime::parse_rfc3339_weak(text) {
            if at <= now {
                return Err(BadInput(format!(
                    "--expires {text} is in the past: a pointer signed so would be refused at once"
                )));
            }
            if at.duration_since(now).unwrap_or_default() > trust::MAX_EXPIRY - Duration::from_secs(86400) {
                return Err(too_far());
            }
            return Ok(Expiry::At(at));
        }
        let after = crate::units::duration::parse(text).map_err(|why| {
            BadInput(format!(
                "--expires {text:?}: a duration (90d) or an RFC 3339 time: {why}"
            ))
        })?;
        if after.is_zero() {
            return Err(BadInput(
                "--expires 0: a pointer signed so would be refused at once".into(),
            ));
        }
        if after > trust::MAX_EXPIRY - Duration::from_secs(86400) {
            return Err(too_far());
        }
        Ok(Expiry::After(after))
    }

    /// The expiry of a pointer signed at `now`, as it is written.
    pub fn at(self, now: SystemTime) -> String {
        let at = match self {
            Expiry::After(after) => now + after,
            Expiry::At(at) => at,
        };
        humantime::format_rfc3339_seconds(at).to_string()
    }
}

/// Who writes manifests and pointers, and how: the name in `updated_by`, and with a
/// signing key, the signature rules.
#[derive(Debug, Default)]
pub struct Author {
    pub who: String,
    pub signer: Option<Signer>,
    pub expires: Expiry,
    /// The keys a pointer must verify against before a signed change builds on it:
    /// the signing key's own and `[trust] keys`.
    pub keys: Keys,
    /// The change depends on what the pointer says (its history, its rollout): a
    /// pointer that does not verify is then refused, not built on.
    pub needs_verified_base: bool,
}

impl Author {
    /// An author that does not sign.
    pub fn unsigned(who: String) -> Author {
        Author {
            who,
            ..Author::default()
        }
    }

    /// An author signing with the key at `path` (when given), checking what it builds
    /// on against that key and `trusted`.
    pub fn new(
        who: String,
        sign_key: Option<&PathBuf>,
        expires: Expiry,
        mut trusted: Keys,
    ) -> anyhow::Result<Author> {
        let signer = sign_key.map(|path| Signer::load(path)).transpose()?;
        if let Some(signer) = &signer {
            // Where this machine lists the keys instances trust, a key outside them
            // would sign what every instance refuses: a frozen environment.
            if !trusted.is_empty() && !trusted.has(&signer.key_id) {
                return Err(BadInput(format!(
                    "signing key {} is not one of this machine's [trust] keys: instances that trust \
                     those would refuse what it signs (add its public key to [trust] keys, here and on the \
                     instances, to rotate to it)",
                    signer.key_id
                ))
                .into());
            }
            trusted.add(signer.public.clone());
        }
        Ok(Author {
            who,
            signer,
            expires,
            keys: trusted,
            needs_verified_base: false,
        })
    }
}

/// With a signing key: the manifest of `tag` must verify against the signing key or
/// `[trust] keys`, since a pointer signed over an unsigned or altered manifest would
/// be refused by every instance that checks signatures.
pub async fn check_manifest(store: &crate::store::Store, tag: &str, author: &Author) -> anyhow::Result<()> {
    if author.signer.is_none() {
        return Ok(());
    }
    let key = crate::store::layout::manifest(tag);
    let url = store.url_of(&key);
    let object = store
        .get(&key, super::manifest::MAX_BYTES)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no release {tag}: {url} is missing"))?;
    let signature = super::signature::read_signature(store, &key).await?;
    author
        .keys
        .verify(store, &key, &object.bytes, signature.as_deref())
        .map_err(|refused| {
            anyhow::anyhow!(
                "release {tag}: manifest {url} does not verify against the signing key or [trust] keys: \
                 {refused}; instances that check signatures would refuse it"
            )
        })?;
    Ok(())
}
