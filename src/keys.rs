//! Signing keys (DESIGN §6.5): minisign-compatible Ed25519 key pairs, the secret key
//! scrypt-encrypted unless asked otherwise. The format and the cryptography are the
//! `minisign` crate's; bootlace adds where the files go and how the password is had.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::BadInput;

/// The secret key's file name, beside the public key's.
pub const SECRET_KEY_FILE: &str = "bootlace.key";
pub const PUBLIC_KEY_FILE: &str = "bootlace.pub";
/// The variable a secret key's password comes from, when not from a terminal prompt.
pub const PASSWORD_VAR: &str = "BOOTLACE_SIGN_PASSWORD";

/// A key pair written to disk.
#[derive(Debug, Serialize)]
pub struct Generated {
    /// The public key as `trust.keys` takes it.
    pub public_key: String,
    /// The key id, as minisign prints it.
    pub key_id: String,
    pub public_key_file: PathBuf,
    pub secret_key_file: PathBuf,
    pub encrypted: bool,
}

/// Generates a key pair into `dir` (`bootlace.key`, mode 0600, and `bootlace.pub`).
/// Existing files are never overwritten. `password`: `None` for an unencrypted key.
pub fn generate(dir: &Path, password: Option<String>) -> anyhow::Result<Generated> {
    let secret_path = dir.join(SECRET_KEY_FILE);
    let public_path = dir.join(PUBLIC_KEY_FILE);
    for path in [&secret_path, &public_path] {
        if path.exists() {
            return Err(BadInput(format!(
                "{} already exists; bootlace never overwrites a key (move it away, or pick another --dir)",
                path.display()
            ))
            .into());
        }
    }
    let encrypted = password.is_some();
    let pair = match password {
        Some(password) => minisign::KeyPair::generate_encrypted_keypair(Some(password)),
        None => minisign::KeyPair::generate_unencrypted_keypair(),
    }
    .map_err(|e| anyhow::anyhow!("generating a key pair: {e}"))?;
    let key_id = format!(
        "{:016X}",
        u64::from_le_bytes(
            pair.pk
                .keynum()
                .try_into()
                .map_err(|_| anyhow::anyhow!("generating a key pair: a key id of another length"))?
        )
    );
    let comment = format!(
        "bootlace {} secret key {key_id}",
        if encrypted { "encrypted" } else { "unencrypted" }
    );
    let secret = pair
        .sk
        .to_box(Some(&comment))
        .map_err(|e| anyhow::anyhow!("encoding the secret key: {e}"))?
        .to_string();
    let public = pair
        .pk
        .to_box()
        .map_err(|e| anyhow::anyhow!("encoding the public key: {e}"))?
        .to_string();
    // Both files or neither: a half-written pair would block every later try.
    write_new(&secret_path, secret.as_bytes(), 0o600)?;
    if let Err(err) = write_new(&public_path, public.as_bytes(), 0o644) {
        let _ = std::fs::remove_file(&secret_path);
        return Err(err);
    }
    Ok(Generated {
        public_key: pair.pk.to_base64(),
        key_id,
        public_key_file: public_path,
        secret_key_file: secret_path,
        encrypted,
    })
}

/// The password for a new secret key: `BOOTLACE_SIGN_PASSWORD`, or asked twice on the
/// terminal. Never a flag, which would land in shell histories and process lists.
pub fn new_password() -> anyhow::Result<String> {
    if let Ok(password) = std::env::var(PASSWORD_VAR) {
        if password.is_empty() {
            return Err(BadInput(format!("{PASSWORD_VAR} is empty")).into());
        }
        return Ok(password);
    }
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return Err(BadInput(format!(
            "no password for the secret key: set {PASSWORD_VAR}, run on a terminal, or pass --unencrypted"
        ))
        .into());
    }
    let password = rpassword::prompt_password("password for the new secret key: ")?;
    let again = rpassword::prompt_password("the same password again: ")?;
    if password != again {
        return Err(BadInput("the two passwords differ; nothing was written".into()).into());
    }
    if password.is_empty() {
        return Err(BadInput("an empty password; use --unencrypted for a key without one".into()).into());
    }
    Ok(password)
}

/// Creates `path` with `bytes`, refusing to replace anything, and syncs it.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let writing = |e: std::io::Error| anyhow::anyhow!("writing {}: {e}", path.display());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(writing)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(err) = written {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(writing(err));
    }
    Ok(())
}
