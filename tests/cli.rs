//! Black-box: the command line contract of DESIGN §2 and §3 that needs no server —
//! exit codes, one-line errors, config loading, flags over variables, file identity and
//! the demo.

mod support;

use support::{bootlace, run, write};

const USER_DATA: &str = "environment=prod\nrole=web\ncontext=b\nmachine_id=i-0fileidentity\nteam=storage\n";

#[test]
fn file_identity_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let user_data = write(dir.path(), "user-data", USER_DATA);
    let source = format!("file:{}", user_data.display());
    let out = run(bootlace().args(["--identity", &source, "--json", "identity"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "machine_id": "i-0fileidentity", "region": null, "availability_zone": null,
            "instance_type": null, "environment": "prod", "role": "web", "context": "b",
            "extra": {"team": "storage"},
        })
    );
}

#[test]
fn file_identity_without_machine_id_uses_etc_machine_id() {
    let dir = tempfile::tempdir().unwrap();
    let user_data = write(dir.path(), "user-data", "environment=prod\nrole=web\ncontext=b\n");
    let out = run(bootlace().args([
        "--identity",
        &format!("file:{}", user_data.display()),
        "--json",
        "identity",
    ]));
    match std::fs::read_to_string("/etc/machine-id").map(|s| s.trim().to_owned()) {
        Ok(id) if !id.is_empty() => {
            assert_eq!(out.code, 0, "{}", out.stderr);
            let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
            assert_eq!(json["machine_id"], id.as_str());
        }
        _ => {
            assert_eq!(out.code, 2);
            assert!(
                out.assert_one_error_line().contains("machine_id="),
                "{}",
                out.stderr
            );
        }
    }
}

#[test]
fn identity_flag_beats_variable_beats_config() {
    let dir = tempfile::tempdir().unwrap();
    let from = |name: &str, context: &str| {
        let text = USER_DATA.replace("context=b", &format!("context={context}"));
        format!("file:{}", write(dir.path(), name, text).display())
    };
    let (flag, var, file) = (
        from("flag", "fromflag"),
        from("var", "fromvar"),
        from("file", "fromfile"),
    );
    let config = write(
        dir.path(),
        "config.toml",
        format!("[identity]\nsource = \"{file}\"\n"),
    );
    let identity = |command: &mut std::process::Command| {
        let out = run(command
            .env("BOOTLACE_CONFIG", &config)
            .args(["--json", "identity"]));
        assert_eq!(out.code, 0, "{}", out.stderr);
        serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap()["context"].clone()
    };
    assert_eq!(identity(&mut bootlace()), "fromfile");
    assert_eq!(identity(bootlace().env("BOOTLACE_IDENTITY", &var)), "fromvar");
    assert_eq!(
        identity(
            bootlace()
                .env("BOOTLACE_IDENTITY", &var)
                .args(["--identity", &flag])
        ),
        "fromflag"
    );
}

#[test]
fn missing_user_data_file_is_exit_2() {
    let out = run(bootlace().args(["--identity", "file:/nonexistent/user-data", "identity"]));
    assert_eq!(out.code, 2);
    let line = out.assert_one_error_line();
    assert!(line.contains("/nonexistent/user-data"), "{line}");
}

#[test]
fn bad_user_data_file_is_exit_2_with_line() {
    let dir = tempfile::tempdir().unwrap();
    let user_data = write(
        dir.path(),
        "user-data",
        "environment=prod\nrole=web/../x\ncontext=b\n",
    );
    let out = run(bootlace().args(["--identity", &format!("file:{}", user_data.display()), "identity"]));
    assert_eq!(out.code, 2);
    let line = out.assert_one_error_line();
    assert!(line.contains("line 2: role"), "{line}");
}

#[test]
fn config_errors_name_the_key_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[identity]\ndeadline = \"forever\"\n", "identity.deadline"),
        ("[store]\nurl = \"s3://b\"\nbucket = \"x\"\n", "bucket"),
        ("[deploy]\nkeep = -1\n", "deploy.keep"),
        ("[identity]\nsource = \"dns\"\n", "identity.source"),
        ("[unknown]\n", "unknown"),
        ("not toml at all", "line 1"),
    ];
    for (text, expected) in cases {
        let config = write(dir.path(), "config.toml", text);
        let out = run(bootlace().env("BOOTLACE_CONFIG", &config).arg("identity"));
        assert_eq!(out.code, 2, "{text}: {}", out.stderr);
        let line = out.assert_one_error_line();
        assert!(line.contains(expected), "expected {expected:?} in {line}");
        assert!(line.contains("config.toml"), "{line}");
    }
}

#[test]
fn named_config_file_must_exist() {
    let out = run(bootlace().args(["--config", "/nonexistent/bootlace.toml", "identity"]));
    assert_eq!(out.code, 2);
    assert!(out.assert_one_error_line().contains("/nonexistent/bootlace.toml"));
}

#[test]
fn usage_errors_are_exit_2() {
    for args in [
        &["frobnicate"][..],
        &["release", "push"][..],
        &["-v", "-q", "identity"][..],
        &[][..],
    ] {
        let out = run(bootlace().args(args));
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"));
    }
    let out = run(bootlace().args(["--identity", "dns", "identity"]));
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("file:PATH"), "{}", out.stderr);
}

#[test]
fn every_command_of_the_contract_is_declared() {
    let out = run(bootlace().arg("--help"));
    assert_eq!(out.code, 0);
    for command in [
        "run", "identity", "plan", "deploy", "rollback", "status", "release", "demo", "agent", "fleet", "key",
    ] {
        assert!(
            out.stdout.lines().any(|l| l.trim_start().starts_with(command)),
            "{command} missing from help:\n{}",
            out.stdout
        );
    }
    for option in [
        "--config",
        "--store",
        "--state-dir",
        "--identity",
        "--json",
        "--verbose",
        "--quiet",
    ] {
        assert!(out.stdout.contains(option), "{option} missing from help");
    }
    for env in [
        "BOOTLACE_CONFIG",
        "BOOTLACE_STORE",
        "BOOTLACE_STATE_DIR",
        "BOOTLACE_IDENTITY",
    ] {
        assert!(out.stdout.contains(env), "{env} missing from help");
    }
    let out = run(bootlace().args(["release", "--help"]));
    for command in ["push", "promote", "rollback", "list", "show"] {
        assert!(out.stdout.contains(command), "release {command} missing");
    }
}

#[test]
fn status_without_a_run_says_so_and_does_not_wait() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(bootlace().args(["--state-dir", dir.path().to_str().unwrap(), "status", "--wait"]));
    assert_eq!(out.code, 1, "no run recorded");
    assert!(
        out.assert_one_error_line().contains("no run recorded"),
        "{}",
        out.stderr
    );
}

#[test]
fn version_prints() {
    let out = run(bootlace().arg("--version"));
    assert_eq!(out.code, 0);
    assert_eq!(
        out.stdout.trim(),
        format!("bootlace {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn demo_runs_the_whole_flow() {
    let out = run(bootlace().arg("demo"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("i-0123456789abcdef0"), "{}", out.stdout);
    assert!(
        out.stdout.contains("demo-1") && out.stdout.contains("prod (serial 1, signed by "),
        "{}",
        out.stdout
    );
    // The machine-specific script of the sample release ran, and only it.
    assert!(
        out.stdout.contains("init for machine i-0123456789abcdef0"),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("init for memcached in context"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("hello from the sample release"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("demo finished: run ok"), "{}", out.stdout);
    // The agent's part: an update, then a broken release rolled back.
    assert!(
        out.stdout.contains("hello from the second release"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(
            "then updated to demo-2, rolled back from demo-3 to demo-2, and refused a tampered pointer"
        ),
        "{}",
        out.stdout
    );
    // Signed releases: an edited pointer is refused by its signature.
    assert!(
        out.stdout.contains("refused pointer") && out.stdout.contains("(trust rule: signature)"),
        "{}",
        out.stdout
    );
    // The fleet: three instances on demo-2; the first last reported refusing the
    // tampered pointer (degraded).
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with("prod ") && l.contains("demo-2 (stable)"))
        .unwrap_or_else(|| panic!("no fleet row in {}", out.stdout));
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>()[4..],
        ["3", "2", "0", "1", "0", "0"],
        "{row}"
    );

    let out = run(bootlace().args(["--json", "demo"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("stdout is only JSON");
    assert_eq!(json["identity"]["role"], "memcached");
    assert_eq!(json["identity"]["extra"]["team"], "storage");
    assert_eq!(json["manifest"]["files"], 4);
    assert_eq!(json["report"]["status"], "ok");
    assert_eq!(json["report"]["init"]["script"], "b/prod/i-0123456789abcdef0.sh");
    assert_eq!(json["report"]["init"]["exit_code"], 0);
    assert_eq!(json["update"]["status"], "ok");
    assert_eq!(json["update"]["trigger"], "agent");
    assert_eq!(json["rollback"]["status"], "rolled_back");
    assert_eq!(json["rollback"]["tag"], "demo-2");
    assert_eq!(json["refused"]["status"], "degraded");
    assert_eq!(json["refused"]["tag"], "demo-2");
    assert_eq!(json["fleet"]["groups"][0]["instances"], 3);
    assert_eq!(json["fleet"]["groups"][0]["by_status"]["degraded"], 1);
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let mut child = bootlace()
        .arg("demo")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(output.status.code(), Some(0), "{stderr}");
}
