//! `bootlace key generate`: a signing key pair for releases.

use std::path::Path;

use super::{GlobalArgs, print_json};
use crate::error::BadInput;
use crate::error::Exit;
use crate::keys;

pub fn generate(global: &GlobalArgs, dir: Option<&Path>, unencrypted: bool) -> anyhow::Result<Exit> {
    let dir = dir.unwrap_or(Path::new("."));
    // A missing directory is made, for the secret key alone (0700), as
    // `key generate --dir ~/keys` suggests; its parent must exist.
    if !dir.exists() && !dir.is_symlink() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(|e| BadInput(format!("--dir {}: cannot be made: {e}", dir.display())))?;
    }
    if !dir.is_dir() {
        return Err(BadInput(format!("--dir {}: not a directory", dir.display())).into());
    }
    let password = if unencrypted {
        None
    } else {
        Some(keys::new_password()?)
    };
    let generated = keys::generate(dir, password)?;
    if global.json {
        print_json(&generated)?;
        return Ok(Exit::Ok);
    }
    outln!(
        "wrote {} ({}) and {}",
        generated.secret_key_file.display(),
        if generated.encrypted {
            "encrypted"
        } else {
            "unencrypted"
        },
        generated.public_key_file.display()
    );
    outln!("key id {}", generated.key_id);
    outln!("public key {}", generated.public_key);
    outln!(
        "instances that trust it: [trust] keys = [\"{}\"]; sign with --sign-key {}",
        generated.public_key,
        generated.secret_key_file.display()
    );
    Ok(Exit::Ok)
}
