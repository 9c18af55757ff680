//! `bootlace key generate`, checked against the reference `minisign` CLI: what it
//! signs with bootlace's secret key, bootlace's public key verifies.

mod support;

use std::os::unix::fs::PermissionsExt;

use support::{bootlace, minisign, run};

#[test]
fn an_encrypted_key_signs_with_minisign_and_its_public_key_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(bootlace()
        .env("BOOTLACE_SIGN_PASSWORD", "correct horse")
        .args(["--json", "key", "generate", "--dir"])
        .arg(dir.path()));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let generated: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(generated["encrypted"], true);
    let secret = dir.path().join("bootlace.key");
    let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the secret key is readable by its owner only");
    let public = std::fs::read_to_string(dir.path().join("bootlace.pub")).unwrap();
    let key_id = generated["key_id"].as_str().unwrap();
    assert!(
        public.contains(&format!("minisign public key: {key_id}")),
        "{public}"
    );
    assert!(
        public.contains(generated["public_key"].as_str().unwrap()),
        "{public}"
    );

    std::fs::write(dir.path().join("data"), "what the release team signs").unwrap();
    let (code, text) = minisign(dir.path(), &["-S", "-s", "bootlace.key", "-m", "data"], "wrong\n");
    assert_ne!(code, 0, "a wrong password opens the key: {text}");
    let (code, text) = minisign(
        dir.path(),
        &["-S", "-s", "bootlace.key", "-m", "data"],
        "correct horse\n",
    );
    assert_eq!(code, 0, "{text}");
    let (code, text) = minisign(dir.path(), &["-V", "-p", "bootlace.pub", "-m", "data"], "");
    assert_eq!(code, 0, "{text}");
    // The same signature does not cover other bytes.
    std::fs::write(dir.path().join("data"), "something else").unwrap();
    let (code, _) = minisign(dir.path(), &["-V", "-p", "bootlace.pub", "-m", "data"], "");
    assert_ne!(code, 0);
}

#[test]
fn an_unencrypted_key_signs_without_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(bootlace()
        .args(["key", "generate", "--unencrypted", "--dir"])
        .arg(dir.path()));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("(unencrypted)"), "{}", out.stdout);
    std::fs::write(dir.path().join("data"), "bytes").unwrap();
    let (code, text) = minisign(dir.path(), &["-S", "-s", "bootlace.key", "-m", "data"], "");
    assert_eq!(code, 0, "{text}");
    let (code, text) = minisign(dir.path(), &["-V", "-p", "bootlace.pub", "-m", "data"], "");
    assert_eq!(code, 0, "{text}");
}

#[test]
fn keys_are_never_overwritten_and_a_password_is_never_a_guess() {
    let dir = tempfile::tempdir().unwrap();
    // No password variable and no terminal: refused, nothing written.
    let out = run(bootlace().args(["key", "generate", "--dir"]).arg(dir.path()));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.assert_one_error_line().contains("BOOTLACE_SIGN_PASSWORD"));
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());

    assert_eq!(
        run(bootlace()
            .args(["key", "generate", "--unencrypted", "--dir"])
            .arg(dir.path()))
        .code,
        0
    );
    let before = std::fs::read(dir.path().join("bootlace.key")).unwrap();
    let out = run(bootlace()
        .args(["key", "generate", "--unencrypted", "--dir"])
        .arg(dir.path()));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.assert_one_error_line().contains("already exists"));
    assert_eq!(std::fs::read(dir.path().join("bootlace.key")).unwrap(), before);

    let out = run(bootlace().args(["key", "generate", "--unencrypted", "--dir", "/nonexistent/keys"]));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.assert_one_error_line().contains("cannot be made"));
}

#[test]
fn a_missing_key_dir_is_made_0700_and_a_file_is_no_dir() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let out = run(bootlace()
        .args(["key", "generate", "--unencrypted", "--dir"])
        .arg(&keys));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(keys.join("bootlace.key").is_file() && keys.join("bootlace.pub").is_file());
    let mode = std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    // A parent that does not exist is said, and nothing is made.
    let deep = dir.path().join("no/such/keys");
    let out = run(bootlace()
        .args(["key", "generate", "--unencrypted", "--dir"])
        .arg(&deep));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("cannot be made"), "{}", out.stderr);
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let out = run(bootlace()
        .args(["key", "generate", "--unencrypted", "--dir"])
        .arg(&file));
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("not a directory"), "{}", out.stderr);
}
