//! Signed releases (DESIGN §6.5), one test per attack: each changes the store as an
//! attacker with write access to the bucket (but not the signing key) could, then
//! checks that the instance switched to nothing — `run` degrades to what it runs, and
//! so does the agent — and that the report names the rule that refused it. Interop
//! with the reference `minisign` CLI both ways.

mod support;

use std::path::{Path, PathBuf};

use support::host::Host;
use support::{bootlace, minisign, run};

/// A key pair from `bootlace key generate` in `dir/<name>`: the secret key's path
/// and the public key as `[trust] keys` takes it.
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let dir = dir.join(name);
    std::fs::create_dir(&dir).unwrap();
    let out = run(bootlace()
        .args(["--json", "key", "generate", "--unencrypted", "--dir"])
        .arg(&dir));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let generated: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    (
        dir.join("bootlace.key"),
        generated["public_key"].as_str().unwrap().to_owned(),
    )
}

fn trusting(keys: &[&str]) -> String {
    let keys: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
    format!("[trust]\nkeys = [{}]\n", keys.join(", "))
}

/// An instance that trusts one key, running v1 (signed), with v2 pushed and signed
/// but not promoted.
struct Signed {
    host: Host,
    key: PathBuf,
}

impl Signed {
    fn new() -> Signed {
        Signed::on(Host::new(""), "")
    }

    /// On `host`, with `config` added to the trust settings.
    fn on(host: Host, config: &str) -> Signed {
        let (key, public) = keygen(host.dir.path(), "keys");
        host.configure(&format!("{}{config}", trusting(&[&public])));
        host.set_env("BOOTLACE_SIGN_KEY", key.to_str().unwrap());
        host.push("v1", Some("echo v1 >> \"$LOG_DIR/init.log\""), &[], true);
        let out = host.run(&["run"]);
        assert_eq!(out.code, 0, "{}", out.all());
        assert_eq!(host.link("current").as_deref(), Some("releases/v1"));
        host.push("v2", Some("echo v2 >> \"$LOG_DIR/init.log\""), &[], false);
        Signed { host, key }
    }

    fn store(&self, key: &str) -> PathBuf {
        self.host.path("store").join(key)
    }

    fn read(&self, key: &str) -> Vec<u8> {
        std::fs::read(self.store(key)).unwrap()
    }

    fn write(&self, key: &str, bytes: impl AsRef<[u8]>) {
        std::fs::write(self.store(key), bytes).unwrap();
    }

    /// Signs `object` in the store with the minisign CLI and the release key, the
    /// trusted comment naming `named` instead.
    fn sign_with_cli(&self, object: &str, named: &str) {
        let store = format!("file://{}", self.host.path("store").display());
        let comment = format!("timestamp:0\tfile:{named}\tstore:{store}\thashed");
        let key = self.key.to_str().unwrap();
        let args = ["-S", "-W", "-s", key, "-m", object, "-t", &comment];
        let (code, text) = minisign(&self.host.path("store"), &args, "");
        assert_eq!(code, 0, "{text}");
    }

    fn operator(&self, args: &[&str]) -> support::Outcome {
        let out = self.host.run(args);
        assert_eq!(out.code, 0, "{}", out.all());
        out
    }

    /// `run` and then `agent --once` keep v1, exit 3, and their report names `rule`
    /// and `what` was refused.
    fn assert_refused(&self, rule: &str, what: &str) {
        for command in [&["run"][..], &["agent", "--once"]] {
            let out = self.host.run(command);
            assert_eq!(out.code, 3, "{command:?}: {}", out.all());
            assert_eq!(
                self.host.link("current").as_deref(),
                Some("releases/v1"),
                "{command:?} switched: {}",
                out.all()
            );
            let report = self.host.report();
            assert_eq!(report["status"], "degraded", "{report}");
            let error = report["error"].as_str().unwrap_or_default();
            assert!(
                error.contains(&format!("(trust rule: {rule})")) && error.contains(what),
                "{command:?}: expected rule {rule} on {what}, got: {error}"
            );
        }
        assert!(!self.host.inits().contains(&"v2".to_owned()), "v2's init ran");
    }
}

#[test]
fn a_signed_release_deploys_and_its_signatures_verify_with_minisign() {
    let s = Signed::new();
    s.operator(&["release", "promote", "v2", "--env", "prod"]);
    let out = s.host.run(&["run"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(s.host.link("current").as_deref(), Some("releases/v2"));
    // What bootlace wrote, the reference tool verifies: prehashed (-H), beside each
    // object under minisign's own default name.
    let public = s.key.with_file_name("bootlace.pub");
    for object in ["pointers/prod.json", "builds/v2.json", "builds/v1.json"] {
        let (code, text) = minisign(
            &s.host.path("store"),
            &["-V", "-H", "-p", public.to_str().unwrap(), "-m", object],
            "",
        );
        assert_eq!(code, 0, "{object}: {text}");
        assert!(text.contains(&format!("file:{object}")), "{object}: {text}");
    }
    let pointer: serde_json::Value = serde_json::from_slice(&s.read("pointers/prod.json")).unwrap();
    assert_eq!(pointer["name"], "prod");
    assert!(pointer["expires"].is_string(), "{pointer}");
    let listed = s.operator(&["release", "list"]).stdout;
    let id = std::fs::read_to_string(&public).unwrap();
    // "untrusted comment: minisign public key: <id>"
    let id = id
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap()
        .to_owned();
    assert!(
        listed.contains(&id),
        "release list names the key id {id}: {listed}"
    );
    let shown = s.operator(&["release", "show", "v2"]).stdout;
    assert!(
        shown.contains(&format!("key {id} (verified against [trust] keys)")),
        "{shown}"
    );
    let trust: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.host.path("state/trust.json")).unwrap()).unwrap();
    assert_eq!(trust["pointers"]["prod"]["serial"], pointer["serial"]);
}

#[test]
fn a_manifest_edited_after_signing_is_refused() {
    let s = Signed::new();
    s.operator(&["release", "promote", "v2", "--env", "prod"]);
    let edited = String::from_utf8(s.read("builds/v2.json"))
        .unwrap()
        .replace("\"files\": 1", "\"files\": 2");
    s.write("builds/v2.json", edited);
    s.assert_refused("signature", "refused manifest");
}

#[test]
fn a_pointer_edited_after_signing_is_refused() {
    let s = Signed::new();
    s.operator(&["release", "promote", "v2", "--env", "prod"]);
    let edited = String::from_utf8(s.read("pointers/prod.json"))
        .unwrap()
        .replace("\"updated_by\": \"", "\"updated_by\": \"mallory ");
    s.write("pointers/prod.json", edited);
    s.assert_refused("signature", "refused pointer");
    // `plan` and `deploy` apply the same rules.
    for command in [&["plan"][..], &["deploy"]] {
        let out = s.host.run(command);
        assert_eq!(out.code, 1, "{command:?}: {}", out.all());
        let line = out.assert_one_error_line();
        assert!(line.contains("(trust rule: signature)"), "{command:?}: {line}");
    }
    assert_eq!(s.host.link("current").as_deref(), Some("releases/v1"));
}

#[test]
fn an_older_signed_pointer_replayed_is_refused() {
    let s = Signed::new();
    // v1 at serial 1 was accepted; v2 at serial 2, then back to v1 at serial 3.
    s.operator(&["release", "promote", "v2", "--env", "prod"]);
    let (old, old_sig) = (s.read("pointers/prod.json"), s.read("pointers/prod.json.minisig"));
    s.operator(&["release", "promote", "v1", "--env", "prod"]);
    let out = s.host.run(&["run"]);
    assert_eq!(out.code, 0, "{}", out.all());
    // Serial 2, validly signed, names v2: replayed, it is refused.
    s.write("pointers/prod.json", old);
    s.write("pointers/prod.json.minisig", old_sig);
    s.assert_refused("serial", "serial 2 is lower than 3");
}

#[test]
fn an_expired_pointer_is_refused_and_resign_renews_it() {
    let s = Signed::new();
    s.operator(&["release", "promote", "v2", "--env", "prod", "--expires", "1h"]);
    let later = humantime::format_rfc3339_seconds(
        std::time::SystemTime::now() + std::time::Duration::from_secs(7200),
    );
    s.host.set_env("BOOTLACE_NOW", later.to_string());
    s.assert_refused("expires", "it expired at");
    // Renewed under a new serial, the same tag is accepted again.
    let before: serde_json::Value = serde_json::from_slice(&s.read("pointers/prod.json")).unwrap();
    let out = s.operator(&["release", "resign", "--env", "prod", "--expires", "30d"]);
    assert!(out.stdout.contains("pointer prod -> v2"), "{}", out.stdout);
    let after: serde_json::Value = serde_json::from_slice(&s.read("pointers/prod.json")).unwrap();
    assert_eq!(after["tag"], "v2");
    assert_eq!(after["serial"], before["serial"].as_u64().unwrap() + 1);
    assert!(
        after["expires"].as_str() > before["expires"].as_str(),
        "{before} -> {after}"
    );
    let out = s.host.run(&["run"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(s.host.link("current").as_deref(), Some("releases/v2"));
}

#[test]
fn staging_pointer_copied_over_prod_is_refused() {
    let s = Signed::new();
    s.operator(&["release", "promote", "v2", "--env", "staging"]);
    s.write("pointers/prod.json", s.read("pointers/staging.json"));
    s.write(
        "pointers/prod.json.minisig",
        s.read("pointers/staging.json.minisig"),
    );
    // The signature names pointers/staging.json.
    s.assert_refused("object", "made for \"pointers/staging.json\"");
}

#[test]
fn a_staging_body_signed_for_prods_name_is_refused_by_its_name() {
    // A signer who signs staging's body under prod's object name (with the minisign
    // CLI): the signature is good, the body says it is staging.
    let s = Signed::new();
    s.operator(&["release", "promote", "v2", "--env", "staging"]);
    s.write("pointers/prod.json", s.read("pointers/staging.json"));
    s.sign_with_cli("pointers/prod.json", "pointers/prod.json");
    s.assert_refused("name", "it is pointer \"staging\", not \"prod\"");
}

#[test]
fn a_50_mb_pointer_is_refused_unread() {
    let s = Signed::new();
    s.write("pointers/prod.json", vec![b' '; 50 << 20]);
    s.assert_refused("size", "not read");
}

#[test]
fn a_signature_by_an_unknown_key_is_refused() {
    let s = Signed::new();
    let (other, other_public) = keygen(s.host.dir.path(), "other");
    // An operator machine that trusts both keys (this one refuses a key outside its
    // own) signs the pointer with a key the instance does not know.
    let first = std::fs::read_to_string(s.key.with_file_name("bootlace.pub")).unwrap();
    let first = first.lines().nth(1).unwrap().trim().to_owned();
    let operator = s.host.path("operator.toml");
    std::fs::write(&operator, trusting(&[&first, &other_public])).unwrap();
    let out = run(s
        .host
        .command()
        .env("BOOTLACE_CONFIG", &operator)
        .args(["release", "promote", "v2", "--env", "prod", "--sign-key"])
        .arg(&other));
    assert_eq!(out.code, 0, "{}", out.all());
    s.assert_refused("key", "which is not one of [trust] keys");
}

#[test]
fn an_unsigned_pointer_is_refused_when_keys_are_set() {
    let s = Signed::new();
    // Unsigned changes to a signed pointer are refused by bootlace itself...
    let mut unsigned = s.host.command();
    unsigned.env_remove("BOOTLACE_SIGN_KEY");
    let out = run(unsigned.args(["release", "promote", "v2", "--env", "prod"]));
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.assert_one_error_line().contains("is signed"),
        "{}",
        out.stderr
    );
    // ...so the attacker removes the signature first.
    std::fs::remove_file(s.store("pointers/prod.json.minisig")).unwrap();
    let mut unsigned = s.host.command();
    unsigned.env_remove("BOOTLACE_SIGN_KEY");
    let out = run(unsigned.args(["release", "promote", "v2", "--env", "prod"]));
    assert_eq!(out.code, 0, "{}", out.all());
    s.assert_refused("signed", "it has no signature (pointers/prod.json.minisig)");
}

#[test]
fn a_garbage_signature_is_refused() {
    let s = Signed::new();
    s.operator(&["release", "promote", "v2", "--env", "prod"]);
    s.write(
        "pointers/prod.json.minisig",
        "untrusted comment: hi\nnot base64 at all\n",
    );
    s.assert_refused("signature", "is not a minisign signature");
    // A legacy (not prehashed) signature by the right key is refused too.
    let (code, text) = minisign(
        &s.host.path("store"),
        &[
            "-S",
            "-l",
            "-W",
            "-s",
            s.key.to_str().unwrap(),
            "-m",
            "pointers/prod.json",
        ],
        "",
    );
    assert_eq!(code, 0, "{text}");
    s.assert_refused("signature", "legacy signature");
    // A comment signature of the wrong length (minisign itself would panic on it), on
    // a pointer signed afresh (promote writes over one that does not verify; no
    // signature beside it names the last serial signed, so the operator says it).
    s.host.set_env("BOOTLACE_SERIAL_FLOOR", "2");
    s.operator(&["release", "promote", "v2", "--env", "prod"]);
    let good = String::from_utf8(s.read("pointers/prod.json.minisig")).unwrap();
    let mut lines: Vec<&str> = good.lines().collect();
    lines[3] = "AA==";
    s.write("pointers/prod.json.minisig", lines.join("\n") + "\n");
    s.assert_refused("signature", "comment signature is not 64 bytes");
}

#[test]
fn a_signature_naming_another_object_is_refused() {
    let s = Signed::new();
    s.operator(&["release", "promote", "v2", "--env", "prod"]);
    s.sign_with_cli("builds/v2.json", "builds/v1.json");
    s.assert_refused("object", "made for \"builds/v1.json\", not builds/v2.json");
}

#[test]
fn key_rotation_two_keys_then_the_old_one_retired() {
    let host = Host::new("");
    let (old, old_public) = keygen(host.dir.path(), "old");
    let (new, new_public) = keygen(host.dir.path(), "new");
    host.configure(&trusting(&[&old_public, &new_public]));
    host.set_env("BOOTLACE_SIGN_KEY", old.to_str().unwrap());
    host.push("v1", Some("true"), &[], true);
    assert_eq!(host.run(&["run"]).code, 0);
    // An instance remembers which key verified the bytes it accepted: those same
    // bytes are refused once that key is no longer trusted.
    host.configure(&trusting(&[&new_public]));
    let out = host.run(&["run"]);
    assert_eq!(out.code, 3, "{}", out.all());
    let error = host.report()["error"].as_str().unwrap().to_owned();
    assert!(error.contains("(trust rule: key)"), "{error}");
    host.configure(&trusting(&[&old_public, &new_public]));
    // The release team moves to the new key; both are trusted meanwhile.
    host.set_env("BOOTLACE_SIGN_KEY", new.to_str().unwrap());
    host.push("v2", Some("true"), &[], true);
    let out = host.run(&["run"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(host.link("current").as_deref(), Some("releases/v2"));
    // The old key is retired: what it signs is refused from now on (here by an
    // operator who still signs with it), while what the new key signed keeps working.
    host.configure(&trusting(&[&new_public]));
    assert_eq!(host.run(&["run"]).code, 0);
    host.set_env("BOOTLACE_SIGN_KEY", old.to_str().unwrap());
    // This machine refuses to sign with a key it no longer trusts; one without [trust]
    // keys signs, and instances refuse it.
    let out = host.run(&["release", "promote", "v1", "--env", "prod"]);
    assert_eq!(out.code, 2, "{}", out.all());
    let operator = host.path("operator.toml");
    std::fs::write(&operator, trusting(&[&old_public, &new_public])).unwrap();
    let out = run(host
        .command()
        .env("BOOTLACE_CONFIG", &operator)
        .args(["release", "promote", "v1", "--env", "prod"]));
    assert_eq!(out.code, 0, "{}", out.all());
    let out = host.run(&["run"]);
    assert_eq!(out.code, 3, "{}", out.all());
    assert_eq!(host.link("current").as_deref(), Some("releases/v2"));
    let error = host.report()["error"].as_str().unwrap().to_owned();
    assert!(error.contains("(trust rule: key)"), "{error}");
}

#[test]
fn a_minisign_generated_key_signs_releases_bootlace_verifies() {
    let host = Host::new("");
    let keys = host.path("mk");
    std::fs::create_dir(&keys).unwrap();
    // An encrypted key made by the reference tool, its password given as bootlace
    // takes it.
    let (code, text) = minisign(
        &keys,
        &["-G", "-p", "mk.pub", "-s", "mk.key"],
        "pass word\npass word\n",
    );
    assert_eq!(code, 0, "{text}");
    let public = std::fs::read_to_string(keys.join("mk.pub")).unwrap();
    let public = public.lines().nth(1).unwrap().trim().to_owned();
    host.configure(&trusting(&[&public]));
    host.set_env("BOOTLACE_SIGN_KEY", keys.join("mk.key").to_str().unwrap());
    let mut wrong = host.command();
    wrong.env("BOOTLACE_SIGN_PASSWORD", "not it");
    let tree = host.path("tree");
    std::fs::create_dir(&tree).unwrap();
    let out = run(wrong.args(["release", "push", tree.to_str().unwrap(), "--tag", "v1"]));
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.assert_one_error_line().contains("wrong password"),
        "{}",
        out.stderr
    );
    assert!(
        !host.path("store/builds/v1.json").exists(),
        "nothing written with a wrong password"
    );
    host.set_env("BOOTLACE_SIGN_PASSWORD", "pass word");
    host.push("v1", Some("echo v1 >> \"$LOG_DIR/init.log\""), &[], true);
    let out = host.run(&["run"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(host.inits(), ["v1"]);
    let (code, text) = minisign(
        &host.path("store"),
        &[
            "-V",
            "-p",
            keys.join("mk.pub").to_str().unwrap(),
            "-m",
            "pointers/prod.json",
        ],
        "",
    );
    assert_eq!(code, 0, "{text}");
}

#[test]
fn bad_signing_input_is_one_line_and_writes_nothing() {
    let host = Host::new("");
    let (key, public) = keygen(host.dir.path(), "keys");
    let tree = host.path("tree");
    std::fs::create_dir(&tree).unwrap();
    let tree = tree.to_str().unwrap();
    // Exit 2 with one error line that says `why`.
    let refused = |args: &[&str], why: &str| {
        let out = host.run(args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.all());
        let line = out.assert_one_error_line();
        assert!(line.contains(why), "{args:?}: {line}");
    };
    // A public key with a typo.
    let typo = format!("{}{}", &public[..10], &public[11..]);
    host.configure(&trusting(&[&typo]));
    refused(&["plan"], "trust.keys[0]");
    host.configure(&trusting(&[&public]));
    let push = ["release", "push", tree, "--tag", "v1", "--sign-key"];
    // A key file that is a directory.
    refused(
        &[&push[..], &[host.dir.path().to_str().unwrap()]].concat(),
        "is not a file",
    );
    // An expiry in the past.
    let past = [
        key.to_str().unwrap(),
        "--env",
        "prod",
        "--expires",
        "2020-01-01T00:00:00Z",
    ];
    refused(&[&push[..], &past].concat(), "in the past");
    // A public key where the secret key should be.
    let public_file = key.with_file_name("bootlace.pub");
    refused(
        &[&push[..], &[public_file.to_str().unwrap()]].concat(),
        "not a minisign secret key",
    );
    assert!(!host.path("store/builds/v1.json").exists(), "nothing was pushed");
    // resign without a key.
    refused(&["release", "resign", "--env", "prod"], "--sign-key");
}

#[test]
fn a_running_agent_reports_a_pointer_kept_past_its_expiry() {
    let s = Signed::on(Host::new(""), "[agent]\ninterval = \"1s\"\njitter = \"0s\"\n");
    s.operator(&["release", "promote", "v2", "--env", "prod", "--expires", "8s"]);
    let mut agent = s
        .host
        .command()
        .arg("agent")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let report = |field: &str| -> String {
        std::fs::read(s.host.path("state/last-run.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .map(|r| r[field].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    };
    let updated = support::host::eventually(std::time::Duration::from_secs(20), || report("tag") == "v2");
    // Unchanged pointer, answered 304 at every check, until the clock passes its expiry.
    let frozen = updated
        && support::host::eventually(std::time::Duration::from_secs(30), || {
            report("error").contains("(trust rule: expires)")
        });
    agent.kill().unwrap();
    agent.wait().unwrap();
    assert!(updated, "the agent never reached v2: {}", report("error"));
    assert!(frozen, "no expiry reported: {:?}", report("error"));
    assert_eq!(report("status"), "degraded");
    assert_eq!(
        s.host.link("current").as_deref(),
        Some("releases/v2"),
        "the agent keeps what it runs"
    );
}

/// Signed changes racing each other leave a pointer and a signature that match.
fn concurrent_signed_changes_converge(host: Host) {
    let s = Signed::on(host, "");
    s.operator(&["release", "promote", "v2", "--env", "prod", "--percent", "10"]);
    let children: Vec<_> = ["20", "30", "40", "50", "60"]
        .iter()
        .map(|percent| {
            s.host
                .command()
                .args(["release", "rollout", "set", "--env", "prod", "--percent", percent])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // The instance accepts the pointer only if its signature matches it.
    let out = s.host.run(&["run"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let status = s
        .operator(&["release", "rollout", "status", "--env", "prod"])
        .stdout;
    assert!(
        status.contains("serial 7"),
        "five changes after serial 2: {status}"
    );
}

#[test]
fn concurrent_signed_changes_converge_on_file_store() {
    concurrent_signed_changes_converge(Host::new(""));
}

#[test]
fn concurrent_signed_changes_converge_on_moto() {
    concurrent_signed_changes_converge(Host::on_moto(""));
}

// Second pass (issue 24).

/// Edits the JSON object at `key` in the store with `edit`.
fn edit_json(s: &Signed, key: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut value: serde_json::Value = serde_json::from_slice(&s.read(key)).unwrap();
    edit(&mut value);
    s.write(key, serde_json::to_vec(&value).unwrap());
}

impl Signed {
    /// Signs `object` with the minisign CLI as bootlace would: bound to this store, and
    /// for a pointer, naming `serial`.
    fn sign_bound(&self, object: &str, serial: Option<u64>) {
        let store = format!("file://{}", self.host.path("store").display());
        let serial = serial.map(|n| format!("\tserial:{n}")).unwrap_or_default();
        let comment = format!("timestamp:0\tfile:{object}\tstore:{store}{serial}\thashed");
        let key = self.key.to_str().unwrap();
        let (code, text) = minisign(
            &self.host.path("store"),
            &["-S", "-W", "-s", key, "-m", object, "-t", &comment],
            "",
        );
        assert_eq!(code, 0, "{text}");
    }
}

#[test]
fn a_signed_write_never_adopts_an_unverified_serial() {
    let s = Signed::new();
    s.operator(&["release", "promote", "v2", "--env", "prod"]);
    assert_eq!(s.host.run(&["run"]).code, 0);
    // Someone without the key writes an unsigned pointer near the top of u64.
    edit_json(&s, "pointers/prod.json", |p| {
        p["serial"] = serde_json::json!(18446744073709551614u64);
        p["tag"] = "v1".into();
    });
    // The next signed change continues from the last signed serial, as the signature
    // beside the pointer says, not from the forged one.
    let out = s.operator(&["--json", "release", "promote", "v1", "--env", "prod"]);
    let moved: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(moved["pointer"]["serial"], 3, "{}", out.stdout);
    let out = s.host.run(&["run"]);
    assert_eq!(out.code, 0, "the fleet goes on: {}", out.all());
    assert_eq!(s.host.link("current").as_deref(), Some("releases/v1"));
    // With the signature gone too, the operator is asked for the serial.
    edit_json(&s, "pointers/prod.json", |p| {
        p["serial"] = serde_json::json!(9007199254740993u64)
    });
    std::fs::remove_file(s.store("pointers/prod.json.minisig")).unwrap();
    let out = s.host.run(&["release", "promote", "v2", "--env", "prod"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("BOOTLACE_SERIAL_FLOOR"), "{}", out.stderr);
    s.host.set_env("BOOTLACE_SERIAL_FLOOR", "3");
    s.operator(&["release", "promote", "v2", "--env", "prod"]);
    let out = s.host.run(&["run"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(s.host.link("current").as_deref(), Some("releases/v2"));
}

#[test]
fn a_signed_release_of_another_store_with_the_same_key_is_refused() {
    let s = Signed::new();
    // Another store (another application), signed with the same key.
    let other = s.host.path("other");
    let tree = s.host.path("evil-tree/bootstrap/b");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(
        tree.join("bootstrapper.sh"),
        "#!/bin/sh\necho evil >> \"$LOG_DIR/init.log\"\n",
    )
    .unwrap();
    let mut command = s.host.command();
    command.env("BOOTLACE_STORE", format!("file://{}", other.display()));
    let tree_root = s.host.path("evil-tree");
    let out = run(command.args([
        "release",
        "push",
        tree_root.to_str().unwrap(),
        "--tag",
        "v2b",
        "--env",
        "prod",
    ]));
    assert_eq!(out.code, 0, "{}", out.all());
    // Copied over, every object and signature of it.
    let copy = |key: &str| {
        let to = s.store(key);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(other.join(key), to).unwrap();
    };
    for key in [
        "pointers/prod.json",
        "pointers/prod.json.minisig",
        "builds/v2b.json",
        "builds/v2b.json.minisig",
    ] {
        copy(key);
    }
    for blob in std::fs::read_dir(other.join("blobs/sha256")).unwrap() {
        copy(&format!(
            "blobs/sha256/{}",
            blob.unwrap().file_name().to_str().unwrap()
        ));
    }
    s.assert_refused("object", "made for store");
    assert!(!s.host.inits().contains(&"evil".to_owned()));
}

#[test]
fn an_unencrypted_key_made_by_the_minisign_cli_signs_releases() {
    let host = Host::new("");
    let keys = host.path("mk");
    std::fs::create_dir(&keys).unwrap();
    let (code, text) = minisign(&keys, &["-G", "-W", "-p", "mk.pub", "-s", "mk.key"], "");
    assert_eq!(code, 0, "{text}");
    let public = std::fs::read_to_string(keys.join("mk.pub")).unwrap();
    let public = public.lines().nth(1).unwrap().trim().to_owned();
    host.configure(&trusting(&[&public]));
    host.set_env("BOOTLACE_SIGN_KEY", keys.join("mk.key").to_str().unwrap());
    host.push("v1", Some("true"), &[], true);
    let out = host.run(&["run"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let (code, text) = minisign(
        &host.path("store"),
        &[
            "-V",
            "-p",
            keys.join("mk.pub").to_str().unwrap(),
            "-m",
            "pointers/prod.json",
        ],
        "",
    );
    assert_eq!(code, 0, "{text}");
}

#[test]
fn release_list_show_and_fleet_say_whether_a_pointer_verifies() {
    let s = Signed::new();
    s.operator(&["release", "promote", "v2", "--env", "prod"]);
    assert_eq!(s.host.run(&["run"]).code, 0);
    let out = s.operator(&["release", "list"]);
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("v2 "))
        .unwrap()
        .to_owned();
    assert!(line.contains("signed by") && line.contains(" until "), "{line}");
    // Tampered: the signature no longer matches.
    edit_json(&s, "pointers/prod.json", |p| p["updated_by"] = "mallory".into());
    for args in [&["release", "list"][..], &["release", "show", "v2"]] {
        let out = s.operator(args);
        assert!(
            !out.stdout.contains("signed until") && !out.stdout.contains(" until "),
            "{args:?}: {}",
            out.stdout
        );
        assert!(out.stdout.contains("DOES NOT VERIFY"), "{args:?}: {}", out.stdout);
    }
    let out = s.operator(&["fleet"]);
    assert!(
        !out.stdout.contains("(stable)"),
        "a tampered pointer marks nothing: {}",
        out.stdout
    );
    // Unsigned.
    std::fs::remove_file(s.store("pointers/prod.json.minisig")).unwrap();
    let out = s.operator(&["release", "list"]);
    assert!(out.stdout.contains("UNSIGNED"), "{}", out.stdout);
}

#[test]
fn expiry_is_capped_and_a_pointers_size_must_match_its_manifest() {
    let s = Signed::new();
    let out = s.host.run(&[
        "release",
        "promote",
        "v2",
        "--env",
        "prod",
        "--expires",
        "9999-01-01T00:00:00Z",
    ]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("at most a year ahead"), "{}", out.stderr);
    s.operator(&["release", "promote", "v2", "--env", "prod"]);
    // Signed by the key itself (the CLI), but expiring in 9999: instances cap it.
    edit_json(&s, "pointers/prod.json", |p| {
        p["expires"] = "9999-01-01T00:00:00Z".into();
        p["serial"] = serde_json::json!(10);
    });
    s.sign_bound("pointers/prod.json", Some(10));
    s.assert_refused("expires", "more than a year ahead");
    // A size that is not the manifest's.
    edit_json(&s, "pointers/prod.json", |p| {
        let soon = humantime::format_rfc3339_seconds(
            std::time::SystemTime::now() + std::time::Duration::from_secs(86400),
        );
        p["expires"] = soon.to_string().into();
        p["serial"] = serde_json::json!(11);
        p["size"] = serde_json::json!(1);
    });
    s.sign_bound("pointers/prod.json", Some(11));
    for command in [&["run"][..], &["agent", "--once"]] {
        let out = s.host.run(command);
        assert_eq!(out.code, 3, "{}", out.all());
        let error = s.host.report()["error"].as_str().unwrap_or_default().to_owned();
        assert!(error.contains("but its manifest says"), "{error}");
    }
    assert_eq!(s.host.link("current").as_deref(), Some("releases/v1"));
}

#[test]
fn a_push_that_could_not_move_a_signed_pointer_uploads_nothing() {
    let s = Signed::new();
    let mut unsigned = s.host.command();
    unsigned.env_remove("BOOTLACE_SIGN_KEY");
    let tree = s.host.path("tree-v3");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("x"), "x").unwrap();
    let blobs = || std::fs::read_dir(s.store("blobs/sha256")).unwrap().count();
    let before = blobs();
    let out = run(unsigned.args([
        "release",
        "push",
        tree.to_str().unwrap(),
        "--tag",
        "v3",
        "--env",
        "prod",
    ]));
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("is signed"), "{}", out.stderr);
    assert!(!s.store("builds/v3.json").exists(), "the tag was spent");
    assert_eq!(blobs(), before, "an archive was uploaded");
}

#[test]
fn a_signing_key_outside_this_machines_trust_keys_is_refused() {
    let s = Signed::new();
    let (other, _) = keygen(s.host.dir.path(), "other");
    let before = s.read("pointers/prod.json");
    let out = s.host.run(&[
        "release",
        "promote",
        "v2",
        "--env",
        "prod",
        "--sign-key",
        other.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr.contains("not one of this machine's [trust] keys"),
        "{}",
        out.stderr
    );
    assert_eq!(s.read("pointers/prod.json"), before);
}

/// A delta pack carries no signature of its own (DESIGN §6.9): every file it yields is
/// checked against the index the signed manifest names. So an attacker who can write
/// to the bucket, but has no key, can only make an instance download in full.
#[test]
fn a_delta_pack_written_without_the_key_only_costs_a_full_download() {
    let s = Signed::new();
    // Releases with a file big enough that a pack is worth reading: v3 runs, v4 is
    // its update, and the attacker's own release shares the file too.
    let big: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let files: [(&str, &[u8]); 1] = [("data.bin", &big)];
    let log = |tag: &str| format!("echo {tag} >> \"$LOG_DIR/init.log\"");
    s.host.push("v3", Some(&log("v3")), &files, true);
    assert_eq!(s.host.run(&["run"]).code, 0);
    s.host.push("v4", Some(&log("v4")), &files, false);
    s.host.push("evil", Some(&log("evil")), &files, false);
    let base = {
        let manifest: serde_json::Value = serde_json::from_slice(&s.read("builds/v3.json")).unwrap();
        manifest["sha256"].as_str().unwrap().to_owned()
    };
    s.operator(&["release", "delta", "v4", "--from", "v3"]);
    s.operator(&["release", "delta", "evil", "--from", "v3"]);
    // The attacker's pack relabelled as v4's: the header names v4 and v4's signed
    // index, the payloads give the attacker's tree.
    let (genuine, _) = support::archives::split_delta_pack(&s.read(&format!("deltas/v4/{base}")));
    let (mut header, rest) = support::archives::split_delta_pack(&s.read(&format!("deltas/evil/{base}")));
    header["tag"] = "v4".into();
    header["index_sha256"] = genuine["index_sha256"].clone();
    s.write(
        &format!("deltas/v4/{base}"),
        support::archives::join_delta_pack(&header, &rest),
    );
    s.operator(&["release", "promote", "v4", "--env", "prod"]);
    let out = s.host.run(&["--json", "run"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(s.host.link("current").as_deref(), Some("releases/v4"));
    let report = s.host.report();
    assert_eq!(report["via"], "full", "{report}");
    let why = report["fallback"].as_str().unwrap_or_default();
    assert!(
        why.contains("its index has sha256") && why.contains("the manifest names"),
        "{why}"
    );
    assert_eq!(s.host.inits().last().map(String::as_str), Some("v4"));
    assert!(
        !s.host.inits().contains(&"evil".to_owned()),
        "the attacker's init ran"
    );
}
