//! Black-box: secrets at boot (DESIGN §6.6) from SSM Parameter Store and Secrets
//! Manager in `moto_server` — fetched into a tmpfs with the documented modes, templates
//! filled from the identity, a missing, denied or throttled call, values absent from
//! every output, and rotation reaching a running agent.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::host::{Host, eventually};
use support::imds::{self, Imds};
use support::proxy::{Fault, Proxy};
use support::{aws, run, s3};

/// A prefix of names of this test's own in the shared moto.
fn unique() -> String {
    format!("t{:012x}", fastrand::u64(..1 << 48))
}

/// A dir on tmpfs (`/dev/shm`), removed at the end of the test.
fn tmpfs_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir_in("/dev/shm").expect("/dev/shm (a tmpfs) for the secrets dir");
    assert!(
        bootlace::secrets::is_memory(dir.path()).unwrap(),
        "/dev/shm is not a tmpfs here"
    );
    dir
}

/// A host on a `file://` store whose SSM and Secrets Manager are moto's.
fn host(config: &str) -> Host {
    let host = Host::new(config);
    let endpoint = &s3::moto().endpoint;
    host.set_env("AWS_ENDPOINT_URL_SSM", endpoint);
    host.set_env("AWS_ENDPOINT_URL_SECRETS_MANAGER", endpoint);
    host
}

fn config(dir: &Path, items: &[(&str, String)]) -> String {
    let items: String = items.iter().map(|(k, v)| format!("{k} = \"{v}\"\n")).collect();
    format!("[secrets]\ndir = \"{}\"\n[secrets.items]\n{items}", dir.display())
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every file under `dir`, as text (lossy).
fn every_file(dir: &Path) -> String {
    let mut text = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            } else if entry.file_type().unwrap().is_file() {
                text.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
            }
        }
    }
    text
}

/// Init records what it was given: the dir, its mode and each file's mode and bytes.
const INIT: &str = r#"d="$BOOTLACE_SECRETS_DIR"
{ echo "dir=$d"; stat -c 'mode %n %a' "$d" "$d"/*; } > "$LOG_DIR/seen"
cp "$d/db_password" "$LOG_DIR/db_password.$BOOTLACE_TAG" 2>/dev/null || true
echo "$BOOTLACE_TAG" >> "$LOG_DIR/init.log""#;

#[test]
fn secrets_reach_init_in_a_tmpfs_dir_0700_with_files_0400_and_never_any_output() {
    let (moto, p) = (&s3::moto().endpoint, unique());
    let db = format!("db-VALUE-{p}");
    let token = format!("token-VALUE-{p}");
    let blob: Vec<u8> = vec![0, 1, 2, 255, b'\n', b'x'];
    aws::put_parameter(moto, &format!("/{p}/prod/web/db_password"), &db);
    aws::put_secret(moto, &format!("{p}/prod/i-test/api-token"), &token);
    aws::put_binary_secret(moto, &format!("{p}/prod/blob"), &blob);
    let tmpfs = tmpfs_dir();
    let dir = tmpfs.path().join("secrets");
    let host = host(&config(
        &dir,
        &[
            (
                "db_password",
                format!("ssm:/{p}/{{environment}}/{{role}}/db_password"),
            ),
            (
                "api_token",
                format!("secretsmanager:{p}/{{environment}}/{{machine_id}}/api-token"),
            ),
            ("blob", format!("secretsmanager:{p}/{{environment}}/blob")),
        ],
    ));
    host.push("v1", Some(INIT), &[], true);
    // A file an older config had bootlace write: removed, as a name no longer
    // configured.
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("old_name"), "stale").unwrap();
    std::fs::write(dir.join(".bootlace-secrets"), r#"["old_name"]"#).unwrap();

    let out = host.run(&["-vv", "run"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(dir.join("db_password")).unwrap(), db);
    assert_eq!(std::fs::read_to_string(dir.join("api_token")).unwrap(), token);
    assert_eq!(std::fs::read(dir.join("blob")).unwrap(), blob);
    assert!(!dir.join("old_name").exists(), "a stale secret file stayed");
    assert_eq!(mode(&dir), 0o700);
    for name in ["db_password", "api_token", "blob"] {
        assert_eq!(mode(&dir.join(name)), 0o400, "{name}");
    }
    let seen = std::fs::read_to_string(host.path("log/seen")).unwrap();
    assert!(seen.contains(&format!("dir={}", dir.display())), "{seen}");
    assert!(
        seen.contains(&format!("mode {}/db_password 400", dir.display())),
        "{seen}"
    );
    assert_eq!(
        std::fs::read_to_string(host.path("log/db_password.v1")).unwrap(),
        db
    );
    let report = host.report();
    assert_eq!(
        report["secrets"],
        serde_json::json!(["api_token", "blob", "db_password"])
    );

    // Every output and every file bootlace keeps, with debug logging on.
    let mut outputs = vec![out.all()];
    for args in [
        &["-vv", "--json", "run"][..],
        &["--json", "status"],
        &["status"],
        &["plan"],
        &["--json", "plan"],
        &["--json", "identity"],
        &["--json", "agent", "--once"],
    ] {
        let out = host.run(args);
        assert!(!out.stderr.contains("panicked"), "{args:?}: {}", out.stderr);
        outputs.push(out.all());
    }
    outputs.push(every_file(&host.path("state")));
    outputs.push(every_file(&host.path("store")));
    let all = outputs.join("\n");
    for value in [db.as_str(), token.as_str(), "VALUE"] {
        assert!(
            !all.contains(value),
            "{value:?} appears in an output or a kept file"
        );
    }
    assert!(!all.as_bytes().windows(blob.len()).any(|w| w == blob));
}

#[test]
fn a_secret_printed_by_init_is_scrubbed_from_the_report() {
    let (moto, p) = (&s3::moto().endpoint, unique());
    let value = format!("printed-{p}");
    aws::put_parameter(moto, &format!("/{p}/db"), &value);
    let tmpfs = tmpfs_dir();
    let host = host(&config(tmpfs.path(), &[("db", format!("ssm:/{p}/db"))]));
    host.push(
        "v1",
        Some("echo \"password is $(cat \"$BOOTLACE_SECRETS_DIR/db\")\""),
        &[],
        true,
    );
    let out = host.run(&["run"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let tail = host.report()["init"]["output_tail"].as_str().unwrap().to_owned();
    assert_eq!(tail.trim(), "password is [secret db]");
    let stored = std::fs::read_to_string(host.path("state/last-run.json")).unwrap();
    assert!(!stored.contains(&value));
}

#[test]
fn a_secret_printed_by_a_failing_health_check_stays_out_of_every_record() {
    let (moto, p) = (&s3::moto().endpoint, unique());
    let value = format!("health-VALUE-{p}");
    aws::put_parameter(moto, &format!("/{p}/db"), &value);
    let tmpfs = tmpfs_dir();
    let health = "[health]\ncommand = 'cat \"$BOOTLACE_SECRETS_DIR/db\"; test -f healthy'\ntries = 1\n";
    let host = host(&format!(
        "{}{health}",
        config(tmpfs.path(), &[("db", format!("ssm:/{p}/db"))])
    ));
    host.push("v1", Some("true"), &[("healthy", b"yes")], true);
    assert_eq!(host.run(&["run"]).code, 0);
    host.push("v2", Some("true"), &[], true);
    let out = host.run(&["-vv", "run"]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    let report = host.report();
    // v1's check, run again after the rollback, printed the value too.
    let tail = report["health"]["output_tail"].as_str().unwrap();
    assert_eq!(tail.trim(), "[secret db]", "{report}");
    // The check's own output streams through as it is (as init's does); bootlace's
    // log lines, its report (here on stdout) and everything it keeps hold no value.
    let again = host.run(&["--json", "run"]);
    // (The check prints no newline: its output and the next log line share a line.)
    for line in out.stderr.lines().chain(again.stderr.lines()) {
        let logged = [" WARN ", " INFO ", "warning: "]
            .iter()
            .find_map(|m| line.find(m));
        if let Some(at) = logged {
            assert!(!line[at..].contains(&value), "{line}");
        }
    }
    for (what, text) in [
        ("the report on stdout", again.stdout.clone()),
        ("the state dir", every_file(&host.path("state"))),
        ("the store", every_file(&host.path("store"))),
    ] {
        assert!(!text.contains(&value), "the value is in {what}");
    }
}

#[test]
fn a_missing_secret_fails_the_run_before_init_naming_it_and_its_source() {
    let (moto, p) = (&s3::moto().endpoint, unique());
    aws::put_parameter(moto, &format!("/{p}/present"), "here-VALUE");
    let tmpfs = tmpfs_dir();
    let cases = [
        (
            format!("ssm:/{p}/{{environment}}/missing"),
            format!("ssm:/{p}/prod/missing"),
            "ParameterNotFound",
        ),
        (
            format!("secretsmanager:{p}/gone"),
            format!("secretsmanager:{p}/gone"),
            "ResourceNotFoundException",
        ),
    ];
    for (template, filled, code) in cases {
        let host = host(&config(
            tmpfs.path(),
            &[("present", format!("ssm:/{p}/present")), ("db", template)],
        ));
        host.push("v1", Some("echo ran >> \"$LOG_DIR/init.log\""), &[], true);
        let out = host.run(&["run"]);
        assert_eq!(out.code, 1, "{}", out.stderr);
        let line = out.assert_one_error_line();
        assert!(line.contains(&format!("secret db ({filled})")), "{line}");
        assert!(line.contains(code), "{line}");
        assert!(host.inits().is_empty(), "init ran");
        assert_eq!(host.link("current"), None, "the release was switched to");
        let report = host.report();
        assert_eq!(report["status"], "failed");
        assert!(report["error"].as_str().unwrap().contains(code));
        assert!(!out.all().contains("here-VALUE"));
    }
    // A template needing what user-data does not give: bad input, exit 2.
    let host = host(&config(tmpfs.path(), &[("db", format!("ssm:/{p}/{{nope}}"))]));
    host.push("v1", Some("echo ran >> \"$LOG_DIR/init.log\""), &[], true);
    let out = host.run(&["run"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.assert_one_error_line().contains("secrets.items.db"),
        "{}",
        out.stderr
    );
    assert!(host.inits().is_empty());
}

#[test]
fn a_dir_not_on_tmpfs_is_refused_unless_the_config_allows_it() {
    let (moto, p) = (&s3::moto().endpoint, unique());
    aws::put_parameter(moto, &format!("/{p}/db"), "disk-VALUE");
    let disk = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    assert!(
        !bootlace::secrets::is_memory(disk.path()).unwrap(),
        "the target dir is on tmpfs here"
    );
    let dir = disk.path().join("secrets");
    let items = [("db", format!("ssm:/{p}/db"))];
    let host = host(&config(&dir, &items));
    host.push("v1", Some("echo ran >> \"$LOG_DIR/init.log\""), &[], true);
    let out = host.run(&["run"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let line = out.assert_one_error_line();
    assert!(
        line.contains("not on tmpfs") && line.contains("require_tmpfs"),
        "{line}"
    );
    assert!(!dir.join("db").exists());
    assert!(host.inits().is_empty());
    let plan = host.run(&["plan"]);
    assert!(
        plan.stdout.contains("not on tmpfs: a run would refuse it"),
        "{}",
        plan.stdout
    );

    host.configure(
        &config(&dir, &items).replace("[secrets.items]", "require_tmpfs = false\n[secrets.items]"),
    );
    let out = host.run(&["run"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(dir.join("db")).unwrap(), "disk-VALUE");
    assert_eq!(mode(&dir.join("db")), 0o400);
}

#[test]
fn plan_lists_names_and_sources_and_fetches_nothing() {
    let p = unique();
    let tmpfs = tmpfs_dir();
    let host = Host::new(&config(
        tmpfs.path(),
        &[
            ("db_password", format!("ssm:/{p}/{{environment}}/{{role}}/db")),
            ("api", "secretsmanager:{environment}/api".to_owned()),
        ],
    ));
    // Nothing listens here: a fetch would fail.
    host.set_env("AWS_ENDPOINT_URL_SSM", support::DEAD_ENDPOINT);
    host.set_env("AWS_ENDPOINT_URL_SECRETS_MANAGER", support::DEAD_ENDPOINT);
    host.push("v1", Some("true"), &[], true);
    let out = host.run(&["plan"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains(&format!("secrets    2 into {} (tmpfs):", tmpfs.path().display())),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!("db_password  ssm:/{p}/prod/web/db")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("api          secretsmanager:prod/api"),
        "{}",
        out.stdout
    );
    let out = host.run(&["--json", "plan"]);
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        plan["secrets"],
        serde_json::json!([
            {"name": "api", "source": "secretsmanager:prod/api"},
            {"name": "db_password", "source": format!("ssm:/{p}/prod/web/db")},
        ])
    );
    assert_eq!(plan["secrets_dir"], tmpfs.path().display().to_string());
}

#[test]
fn throttled_calls_are_retried_until_they_succeed() {
    let (moto, p) = (&s3::moto().endpoint, unique());
    aws::put_parameter(moto, &format!("/{p}/db"), "throttled-VALUE");
    aws::put_secret(moto, &format!("{p}/api"), "api-VALUE");
    // The first four calls through the proxy are throttled, whichever they are.
    let proxy = Proxy::start(moto, "/", Fault::Throttle, 4);
    let tmpfs = tmpfs_dir();
    let host = Host::new(&config(
        tmpfs.path(),
        &[
            ("db", format!("ssm:/{p}/db")),
            ("api", format!("secretsmanager:{p}/api")),
        ],
    ));
    host.set_env("AWS_ENDPOINT_URL_SSM", &proxy.endpoint);
    host.set_env("AWS_ENDPOINT_URL_SECRETS_MANAGER", &proxy.endpoint);
    host.push("v1", Some("true"), &[], true);
    let out = host.run(&["run"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(proxy.spoiled.load(std::sync::atomic::Ordering::SeqCst), 4);
    assert_eq!(
        std::fs::read_to_string(tmpfs.path().join("db")).unwrap(),
        "throttled-VALUE"
    );
    assert_eq!(
        std::fs::read_to_string(tmpfs.path().join("api")).unwrap(),
        "api-VALUE"
    );

    // Throttled past secrets.deadline: the run fails, saying so.
    let proxy = Proxy::start(moto, "/", Fault::Throttle, usize::MAX);
    host.set_env("AWS_ENDPOINT_URL_SSM", &proxy.endpoint);
    host.configure(
        &config(tmpfs.path(), &[("db", format!("ssm:/{p}/db"))])
            .replace("[secrets.items]", "deadline = \"1s\"\n[secrets.items]"),
    );
    let out = host.run(&["run"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let line = out.assert_one_error_line();
    assert!(
        line.contains("ThrottlingException") && line.contains("secrets.deadline"),
        "{line}"
    );
}

#[test]
fn ten_secrets_take_one_batch_call_per_service() {
    let (moto, p) = (&s3::moto().endpoint, unique());
    let mut items = Vec::new();
    for i in 0..5 {
        aws::put_parameter(moto, &format!("/{p}/param{i}"), &format!("param-VALUE-{i}"));
        aws::put_secret(moto, &format!("{p}/secret{i}"), &format!("secret-VALUE-{i}"));
        items.push((format!("param{i}"), format!("ssm:/{p}/param{i}")));
        items.push((format!("secret{i}"), format!("secretsmanager:{p}/secret{i}")));
    }
    // A proxy that spoils nothing, to count the calls.
    let proxy = Proxy::start(moto, "/", Fault::Throttle, 0);
    let tmpfs = tmpfs_dir();
    let items: Vec<(&str, String)> = items.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let host = Host::new(&config(tmpfs.path(), &items));
    host.set_env("AWS_ENDPOINT_URL_SSM", &proxy.endpoint);
    host.set_env("AWS_ENDPOINT_URL_SECRETS_MANAGER", &proxy.endpoint);
    host.push("v1", Some("true"), &[], true);
    let out = host.run(&["run"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for i in 0..5 {
        let read = |name: String| std::fs::read_to_string(tmpfs.path().join(name)).unwrap();
        assert_eq!(read(format!("param{i}")), format!("param-VALUE-{i}"));
        assert_eq!(read(format!("secret{i}")), format!("secret-VALUE-{i}"));
    }
    assert_eq!(proxy.requests.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[test]
fn a_denied_call_fails_and_an_allowed_one_passes_iam_with_a_real_signature() {
    // A moto of its own that checks signatures and policies after 5 set-up calls.
    let moto = s3::moto_with_iam(5);
    let endpoint = &moto.endpoint;
    aws::put_parameter(endpoint, "/prod/web/db", "iam-VALUE");
    aws::put_parameter(endpoint, "/prod/web/db2", "iam-VALUE-2");
    assert_eq!(
        aws::iam(endpoint, &[("Action", "CreateUser"), ("UserName", "instance")]).0,
        200
    );
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ssm:GetParameter","Resource":"*"}]}"#;
    let (status, answer) = aws::iam(
        endpoint,
        &[
            ("Action", "PutUserPolicy"),
            ("UserName", "instance"),
            ("PolicyName", "secrets"),
            ("PolicyDocument", policy),
        ],
    );
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = aws::iam(
        endpoint,
        &[("Action", "CreateAccessKey"), ("UserName", "instance")],
    );
    assert_eq!(status, 200, "{answer}");
    let key_id = aws::xml_field(&answer, "AccessKeyId");
    let secret = aws::xml_field(&answer, "SecretAccessKey");

    let tmpfs = tmpfs_dir();
    let host = Host::new(&config(
        tmpfs.path(),
        &[
            ("db", "ssm:/{environment}/{role}/db".into()),
            ("db2", "ssm:/{environment}/{role}/db2".into()),
        ],
    ));
    host.push("v1", Some("true"), &[], true);
    host.set_env("AWS_ENDPOINT_URL_SSM", endpoint);
    host.set_env("AWS_ENDPOINT_URL_SECRETS_MANAGER", endpoint);
    host.set_env("AWS_ACCESS_KEY_ID", &key_id);
    host.set_env("AWS_SECRET_ACCESS_KEY", &secret);
    // Allowed, and signed as AWS checks it: the batch call (ssm:GetParameters) is
    // denied by this policy, and each one asked for alone passes.
    let out = host.run(&["run"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(tmpfs.path().join("db")).unwrap(),
        "iam-VALUE"
    );
    assert_eq!(
        std::fs::read_to_string(tmpfs.path().join("db2")).unwrap(),
        "iam-VALUE-2"
    );

    // Not allowed by the policy.
    host.configure(&config(
        tmpfs.path(),
        &[("db", "secretsmanager:{environment}/db".into())],
    ));
    let out = host.run(&["run"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let line = out.assert_one_error_line();
    assert!(line.contains("secret db (secretsmanager:prod/db)"), "{line}");
    assert!(line.contains("AccessDenied"), "{line}");

    // The legacy user-data keys: when given, they are used, whatever the environment
    // holds (here the keys every test gets, which this moto does not know).
    host.configure(&config(
        tmpfs.path(),
        &[("db", "ssm:/{environment}/{role}/db".into())],
    ));
    std::fs::remove_file(tmpfs.path().join("db")).unwrap();
    let user_data = std::fs::read_to_string(host.path("user-data")).unwrap();
    let with_keys = format!("{user_data}aws_access_key_id={key_id}\naws_secret_access_key={secret}\n");
    std::fs::write(host.path("user-data"), with_keys).unwrap();
    let out = run(host
        .command()
        .env("AWS_ACCESS_KEY_ID", s3::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", s3::SECRET_KEY)
        .arg("run"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(tmpfs.path().join("db")).unwrap(),
        "iam-VALUE"
    );
    assert!(!out.all().contains(&secret));
    std::fs::write(host.path("user-data"), user_data).unwrap();

    // A wrong secret key: the signature does not match.
    host.set_env("AWS_SECRET_ACCESS_KEY", "not-the-key");
    let out = host.run(&["run"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let line = out.assert_one_error_line();
    assert!(line.contains("secret db (ssm:/prod/web/db)"), "{line}");
    assert!(line.contains("SignatureDoesNotMatch"), "{line}");
    assert!(!out.all().contains("iam-VALUE"));
}

/// A host whose identity and AWS keys come from `imds` alone, with release v1 pushed
/// and one secret, `db`, read from `source`; and its command with no keys in the
/// environment.
fn on_instance_role(imds: &Imds, tmpfs: &Path, source: String) -> (Host, Command) {
    let host = host(&config(tmpfs, &[("db", source)]));
    host.push("v1", Some("true"), &[], true);
    host.set_env("BOOTLACE_IDENTITY", "imds");
    host.set_env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.endpoint());
    let mut command = host.command();
    command
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY");
    (host, command)
}

#[test]
fn secrets_are_read_with_the_instance_role_in_the_identitys_region() {
    let imds = Imds::start(imds::Options {
        role_credentials_ttl: Some(Duration::from_secs(3600)),
        ..imds::Options::default()
    });
    let (moto, p) = (&s3::moto().endpoint, unique());
    // Only in the instance's region: found there or not at all.
    aws::put_parameter_in(moto, imds::REGION, &format!("/{p}/memcached/db"), "role-VALUE");
    let tmpfs = tmpfs_dir();
    let (_host, mut command) = on_instance_role(&imds, tmpfs.path(), format!("ssm:/{p}/{{role}}/db"));
    let out = run(command.env_remove("AWS_REGION").arg("run"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(tmpfs.path().join("db")).unwrap(),
        "role-VALUE"
    );
    let role = format!("/latest/meta-data/iam/security-credentials/{}", imds::ROLE);
    assert!(imds.seen().iter().any(|s| s.path == role && s.status == 200));
}

#[test]
fn an_instance_role_token_no_header_can_carry_fails_in_one_line_not_a_panic() {
    // A compromised instance's metadata service: the role's token holds a newline.
    let imds = Imds::with_role_token("t\u{f6}ken\n\u{7f}");
    let tmpfs = tmpfs_dir();
    let (host, mut command) = on_instance_role(&imds, tmpfs.path(), "ssm:/prod/{role}/db".into());
    let out = run(command.arg("run"));
    assert_eq!(out.code, 1, "{}", out.stderr);
    let line = out.assert_one_error_line();
    assert!(line.contains("not printable ASCII"), "{line}");
    assert!(
        !out.all().contains("panicked") && !out.all().contains('\u{f6}'),
        "{}",
        out.all()
    );
    assert!(host.link("current").is_none(), "a release was made current");
}

#[test]
fn an_update_whose_secret_is_missing_is_not_switched_to() {
    let (moto, p) = (&s3::moto().endpoint, unique());
    aws::put_parameter(moto, &format!("/{p}/db"), "update-VALUE");
    let tmpfs = tmpfs_dir();
    let host = host(&config(tmpfs.path(), &[("db_password", format!("ssm:/{p}/db"))]));
    host.push("v1", Some(INIT), &[], true);
    assert_eq!(host.run(&["run"]).code, 0);
    // The next release needs a secret that is not there.
    host.configure(&config(
        tmpfs.path(),
        &[
            ("db_password", format!("ssm:/{p}/db")),
            ("token", format!("ssm:/{p}/token")),
        ],
    ));
    host.push("v2", Some(INIT), &[], true);
    let out = host.run(&["agent", "--once"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("secret token (ssm:/{p}/token)")),
        "{}",
        out.stderr
    );
    assert_eq!(host.inits(), ["v1"], "init ran for the update");
    assert!(host.link("current").unwrap().ends_with("v1"));
    let report = host.report();
    assert_eq!(
        (report["status"].as_str(), report["trigger"].as_str()),
        (Some("failed"), Some("agent"))
    );
    assert_eq!(report["tag"], "v1");
    assert!(report["error"].as_str().unwrap().contains("ParameterNotFound"));
    assert!(!out.all().contains("update-VALUE"));
}

#[test]
fn a_rotated_secret_reaches_a_running_agent_with_a_release_and_on_sighup() {
    let (moto, p) = (&s3::moto().endpoint, unique());
    let name = format!("/{p}/db");
    aws::put_parameter(moto, &name, "rotation-1");
    let tmpfs = tmpfs_dir();
    let fast = "[agent]\ninterval = \"200ms\"\njitter = \"0s\"\n";
    let host = host(&format!(
        "{fast}{}",
        config(tmpfs.path(), &[("db_password", format!("ssm:{name}"))])
    ));
    let file = tmpfs.path().join("db_password");
    host.push("v1", Some(INIT), &[], true);
    assert_eq!(host.run(&["run"]).code, 0);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "rotation-1");
    let mut agent = host
        .command()
        .arg("agent")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(host.path("agent.log")).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(host.path("agent.log")).unwrap_or_default();

    // With a release: init of v2 sees the new value.
    aws::put_parameter(moto, &name, "rotation-2");
    host.push("v2", Some(INIT), &[], true);
    assert!(
        eventually(Duration::from_secs(20), || host
            .path("log/db_password.v2")
            .exists()),
        "{}",
        log()
    );
    assert_eq!(
        std::fs::read_to_string(host.path("log/db_password.v2")).unwrap(),
        "rotation-2"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "rotation-2");

    // On SIGHUP, without a release.
    aws::put_parameter(moto, &name, "rotation-3");
    // SAFETY: signalling a child we spawned.
    unsafe { libc::kill(agent.id() as i32, libc::SIGHUP) };
    assert!(
        eventually(Duration::from_secs(20), || std::fs::read_to_string(&file)
            .is_ok_and(|v| v == "rotation-3")),
        "{}",
        log()
    );
    assert_eq!(mode(&file), 0o400);
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    assert_eq!(agent.wait().unwrap().code(), Some(0));
    let log = log();
    assert!(log.contains("secrets fetched again"), "{log}");
    for value in ["rotation-1", "rotation-2", "rotation-3"] {
        assert!(!log.contains(value), "{value} in the agent's log");
    }
}

#[test]
fn bad_secrets_config_is_one_line_naming_the_key() {
    for (items, key) in [
        ("\"../x\" = \"ssm:/a\"", "secrets.items"),
        ("db = \"vault:/a\"", "secrets.items.db"),
        ("db = \"ssm:\"", "secrets.items.db"),
    ] {
        let host = Host::new(&format!("[secrets]\n[secrets.items]\n{items}\n"));
        let out = run(host.command().arg("plan"));
        assert_eq!(out.code, 2, "{items}: {}", out.stderr);
        let line = out.assert_one_error_line();
        assert!(line.contains(key), "{items}: {line}");
    }
}

#[test]
fn only_a_directory_of_bootlaces_own_is_managed_and_only_what_it_wrote() {
    let (moto, p) = (&s3::moto().endpoint, unique());
    aws::put_parameter(moto, &format!("/{p}/a"), "value-a");
    let tmpfs = tmpfs_dir();
    // A shared directory (as /run is): a socket's worth of other files in it.
    let shared = tmpfs.path().join("run");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("other.pid"), "123").unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
    let host = host(&config(&shared, &[("a", format!("ssm:/{p}/a"))]));
    host.push("v1", Some("true"), &[], true);
    let out = host.run(&["run"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("holds files bootlace did not write"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("/run/bootlace/secrets"), "{}", out.stderr);
    assert!(
        shared.join("other.pid").exists(),
        "another program's file was removed"
    );
    assert_eq!(mode(&shared), 0o755, "the shared dir's mode was changed");
    // Its own directory: made, and a file someone else drops in later is left alone.
    let own = tmpfs.path().join("own");
    host.configure(&config(&own, &[("a", format!("ssm:/{p}/a"))]));
    assert_eq!(host.run(&["run"]).code, 0);
    std::fs::write(own.join("dropped"), "x").unwrap();
    host.configure(&config(&own, &[]));
    let out = host.run(&["run"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!own.join("a").exists(), "bootlace's own secret stayed");
    assert!(
        own.join("dropped").exists(),
        "a file bootlace did not write was removed"
    );
}

#[test]
fn no_log_level_prints_a_credential() {
    let (moto, p) = (&s3::moto().endpoint, unique());
    aws::put_parameter(moto, &format!("/{p}/a"), "value-a");
    let tmpfs = tmpfs_dir();
    let host = host(&config(&tmpfs.path().join("s"), &[("a", format!("ssm:/{p}/a"))]));
    // The legacy user-data keys, with a session token.
    std::fs::write(
        host.path("user-data"),
        "environment=prod\nrole=web\ncontext=b\nmachine_id=i-test\naws_access_key_id=AKIAUSERDATAKEYID01\n\
         aws_secret_access_key=userdata-secret-key-value\naws_session_token=userdata-session-token-value\n",
    )
    .unwrap();
    host.set_env("AWS_SESSION_TOKEN", "env-session-token-value");
    host.push("v1", Some("true"), &[], true);
    for args in [
        &["-vv", "run"][..],
        &["-vvv", "agent", "--once"],
        &["-vv", "plan"],
    ] {
        let out = host.run(args);
        for secret in [
            "AKIAUSERDATAKEYID01",
            "userdata-secret-key-value",
            "userdata-session-token-value",
            "env-session-token-value",
            "test-access-key",
            "test-secret-key",
        ] {
            assert!(!out.all().contains(secret), "{args:?} printed {secret}");
        }
    }
}
