//! `bootlace key generate`: a signing key pair for releases.

use std::path::Path;

use super::{GlobalArgs, print_json};
use crate::exit::{BadInput, Exit};
use crate::keys;

pub fn generate(global: &GlobalArgs, dir: Option<&Path>, unencrypted: bool) -> anyhow::Result<Exit> {
    let dir = dir.unwrap_or(Path::new("."));
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
