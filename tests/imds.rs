//! Black-box: `bootlace identity` against the IMDS emulator, for every rule of
//! DESIGN §3's IMDS section.

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use hyper::Method;
use support::imds::{self, Imds, Options, Tokens};
use support::{Outcome, bootlace, run, write};

/// Runs `bootlace [args] identity` against `imds` with `config` as the config file.
fn identity(imds: &Imds, config: &str, args: &[&str]) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "config.toml", config);
    run(bootlace()
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.endpoint())
        .env("BOOTLACE_CONFIG", config)
        .args(args)
        .arg("identity"))
}

fn with_user_data(text: &[u8]) -> Options {
    Options {
        user_data: Some(text.to_vec()),
        ..Options::default()
    }
}

const SHORT_DEADLINE: &str = "[identity]\ndeadline = \"3s\"\n";

#[test]
fn imdsv2_identity_as_json() {
    let imds = Imds::start(with_user_data(
        b"environment=prod\nrole=web\ncontext=b\nteam=storage\n",
    ));
    let out = identity(&imds, "", &["--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "machine_id": imds::INSTANCE_ID,
            "region": imds::REGION,
            "availability_zone": imds::AVAILABILITY_ZONE,
            "instance_type": imds::INSTANCE_TYPE,
            "environment": "prod",
            "role": "web",
            "context": "b",
            "extra": {"team": "storage"},
        })
    );
    // One token, asked for the SDKs' 6 hours and reused for all five GETs.
    assert_eq!(imds.token_requests(), 1);
    assert_eq!(imds.ttls(), [21600]);
    let seen = imds.seen();
    assert_eq!(seen.len(), 6, "{seen:?}");
    assert!(seen.iter().all(|s| s.status == 200), "{seen:?}");
}

#[test]
fn human_output_lists_every_field() {
    let imds = Imds::start(Options::default());
    let out = identity(&imds, "", &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for expected in [
        imds::INSTANCE_ID,
        imds::REGION,
        "environment",
        "prod",
        "memcached",
        "context",
    ] {
        assert!(
            out.stdout.contains(expected),
            "{expected} missing from {}",
            out.stdout
        );
    }
    assert!(
        !out.stdout.contains('{'),
        "human output is not JSON: {}",
        out.stdout
    );
}

#[test]
fn disabled_imds_fails_at_once() {
    let imds = Imds::start(Options {
        disabled: true,
        ..Options::default()
    });
    let started = Instant::now();
    let out = identity(&imds, "", &[]);
    let elapsed = started.elapsed();
    assert_eq!(out.code, 1);
    assert!(
        out.assert_one_error_line().contains("IMDS is disabled"),
        "{}",
        out.stderr
    );
    assert_eq!(imds.seen().len(), 1, "no retries after 403: {:?}", imds.seen());
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
}

#[test]
fn three_503s_then_success() {
    let imds = Imds::start(Options {
        fail_next: 3,
        ..Options::default()
    });
    let out = identity(&imds, "", &["--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let statuses: Vec<u16> = imds.seen().iter().map(|s| s.status.as_u16()).collect();
    assert_eq!(&statuses[..4], &[503, 503, 503, 200], "{statuses:?}");
}

#[test]
fn imds_that_starts_listening_3s_late() {
    let imds = Imds::start(Options {
        start_after: Duration::from_secs(3),
        ..Options::default()
    });
    let started = Instant::now();
    let out = identity(&imds, "", &["--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert!(out.stdout.contains(imds::INSTANCE_ID));
}

#[test]
fn unreachable_imds_gives_up_at_the_deadline() {
    let imds = Imds::start(Options {
        start_after: Duration::from_secs(60),
        ..Options::default()
    });
    let started = Instant::now();
    let out = identity(&imds, "[identity]\ndeadline = \"1500ms\"\n", &[]);
    let elapsed = started.elapsed();
    assert_eq!(out.code, 1);
    let line = out.assert_one_error_line();
    assert!(line.contains("deadline of 1s 500ms"), "{line}");
    assert!(line.contains("cannot connect"), "{line}");
    assert!(
        elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(10),
        "{elapsed:?}"
    );
}

#[test]
fn slow_answer_times_out_and_is_retried() {
    let imds = Imds::start(Options {
        slow_next: 1,
        delay: Duration::from_secs(4),
        ..Options::default()
    });
    let out = identity(&imds, "", &["--json", "-v"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("timed out"), "{}", out.stderr);
    // The slow token answer arrived after the client gave up; a second one was asked.
    assert_eq!(imds.token_requests(), 2);
}

#[test]
fn expired_token_is_fetched_again_once() {
    let imds = Imds::start(Options {
        expire_first_token: true,
        ..Options::default()
    });
    let out = identity(&imds, "", &["--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(imds.token_requests(), 2);
    let unauthorised = imds.seen().iter().filter(|s| s.status == 401).count();
    assert_eq!(unauthorised, 1, "{:?}", imds.seen());
}

#[test]
fn token_rejected_again_is_an_error_not_a_loop() {
    let imds = Imds::start(Options {
        reject_tokens: true,
        ..Options::default()
    });
    let out = identity(&imds, SHORT_DEADLINE, &[]);
    assert_eq!(out.code, 1);
    let line = out.assert_one_error_line();
    assert!(line.contains("401"), "{line}");
    assert_eq!(imds.token_requests(), 2);
}

#[test]
fn v1_only_imds_needs_the_fallback() {
    let v1_only = || Options {
        tokens: Tokens::Unsupported,
        ..Options::default()
    };
    let imds = Imds::start(v1_only());
    let out = identity(&imds, SHORT_DEADLINE, &[]);
    assert_eq!(out.code, 1);
    assert!(
        out.assert_one_error_line().contains("IMDSv1 fallback is off"),
        "{}",
        out.stderr
    );
    assert!(
        imds.seen().iter().all(|s| s.method == Method::PUT),
        "no GET without a token"
    );

    let fallback = "[identity]\nimds_v1_fallback = true\n";
    let imds = Imds::start(v1_only());
    let out = identity(&imds, fallback, &["--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains(imds::INSTANCE_ID));

    let imds = Imds::start(v1_only());
    let dir = tempfile::tempdir().unwrap();
    let out = run(bootlace()
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.endpoint())
        .env("AWS_EC2_METADATA_V1_DISABLED", "true")
        .env("BOOTLACE_CONFIG", write(dir.path(), "c.toml", fallback))
        .arg("identity"));
    assert_eq!(out.code, 1, "AWS_EC2_METADATA_V1_DISABLED vetoes the fallback");
    assert!(imds.seen().iter().all(|s| s.method == Method::PUT));
}

#[test]
fn v2_only_imds_refuses_a_client_without_token() {
    // With the fallback on but tokens working, bootlace still uses tokens.
    let imds = Imds::start(Options::default());
    let out = identity(&imds, "[identity]\nimds_v1_fallback = true\n", &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(imds.token_requests(), 1);
    let imds = Imds::start(Options {
        tokens: Tokens::Optional,
        ..Options::default()
    });
    assert_eq!(identity(&imds, "", &[]).code, 0);
}

#[test]
fn metadata_disabled_variable_sends_nothing() {
    let imds = Imds::start(Options::default());
    let out = run(bootlace()
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.endpoint())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .arg("identity"));
    assert_eq!(out.code, 2);
    assert!(out.assert_one_error_line().contains("AWS_EC2_METADATA_DISABLED"));
    assert!(imds.seen().is_empty());
}

#[test]
fn absent_user_data_names_the_missing_keys() {
    let imds = Imds::start(Options {
        user_data: None,
        ..Options::default()
    });
    let out = identity(&imds, "", &[]);
    assert_eq!(out.code, 2);
    let line = out.assert_one_error_line();
    assert!(line.contains("has no user-data"), "{line}");
    assert!(line.contains("environment, role, context"), "{line}");
}

#[test]
fn required_keys_are_configurable() {
    let imds = Imds::start(with_user_data(b"environment=prod\n"));
    let out = identity(&imds, "[identity]\nrequired = [\"environment\"]\n", &["--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["role"], serde_json::Value::Null);

    let out = identity(&imds, "[identity]\nrequired = [\"environment\", \"team\"]\n", &[]);
    assert_eq!(out.code, 2);
    assert!(
        out.assert_one_error_line().contains("missing: team"),
        "{}",
        out.stderr
    );
}

#[test]
fn path_like_context_is_rejected_naming_the_key() {
    let imds = Imds::start(with_user_data(b"environment=prod\nrole=web\ncontext=../../etc\n"));
    let out = identity(&imds, "", &[]);
    assert_eq!(out.code, 2);
    let line = out.assert_one_error_line();
    assert!(line.contains("line 3: context"), "{line}");
    assert!(out.stdout.is_empty());
}

#[test]
fn garbage_binary_and_oversized_user_data_are_clear_errors() {
    let cases: [(&[u8], &str); 5] = [
        (b"#!/bin/bash\necho hello\n", "line 2: expected key=value"),
        (b"\x7fELF\x02\x01\x01\x00\x00\x00", "binary"),
        (b"environment=\xff\xfe\xfd\n", "not UTF-8"),
        (&[b'#'; 16 * 1024 + 1], "at most 16384"),
        (b"\x1f\x8b\x08\x00garbage", "does not decompress"),
    ];
    for (user_data, expected) in cases {
        let imds = Imds::start(with_user_data(user_data));
        let out = identity(&imds, "", &[]);
        assert_eq!(out.code, 2, "{expected}: {}", out.stderr);
        let line = out.assert_one_error_line();
        assert!(line.contains(expected), "expected {expected:?} in {line}");
    }
}

#[test]
fn gzip_user_data_is_accepted() {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"environment=staging\nrole=db\ncontext=c\n")
        .unwrap();
    let imds = Imds::start(with_user_data(&gz.finish().unwrap()));
    let out = identity(&imds, "", &["--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("\"staging\""));
}

#[test]
fn secrets_never_appear_in_output_or_logs() {
    const KEY_ID: &str = "AKIAUSERDATAKEYID0001";
    const SECRET: &str = "wJalrXUtnFEMI-user-data-secret";
    const SESSION: &str = "FwoGZXIvYXdzEUserDataSessionToken";
    let text = format!(
        "environment=prod\nrole=web\ncontext=b\naws_access_key_id={KEY_ID}\n\
         aws_secret_access_key={SECRET}\naws_session_token={SESSION}\n"
    );
    let imds = Imds::start(with_user_data(text.as_bytes()));
    for args in [&["--json", "-vv"][..], &["-vv"][..], &[][..]] {
        let out = identity(&imds, "", args);
        assert_eq!(out.code, 0, "{}", out.stderr);
        for secret in [KEY_ID, SECRET, SESSION] {
            assert!(
                !out.all().contains(secret),
                "{secret} leaked with {args:?}:\n{}",
                out.all()
            );
        }
    }
    // Nor does any IMDS session token, even with the HTTP libraries tracing.
    let out = identity(&imds, "", &["-vv"]);
    let tokens = imds.issued_tokens();
    assert_eq!(tokens.len(), 4);
    assert!(out.stderr.contains("TRACE"), "expected traces: {}", out.stderr);
    for token in &tokens {
        assert!(
            !out.all().contains(token.as_str()),
            "token leaked:\n{}",
            out.all()
        );
    }
    assert!(out.stdout.contains("redacted"));

    // A broken secret line is refused without echoing it.
    let broken = format!("environment=prod\nrole=web\ncontext=b\naws_secret_access_key={SECRET}\n");
    let imds = Imds::start(with_user_data(broken.as_bytes()));
    let out = identity(&imds, "", &["-vv"]);
    assert_eq!(out.code, 2);
    assert!(!out.all().contains(SECRET), "{}", out.all());
}

#[test]
fn logs_are_plain_on_a_pipe_and_stay_off_stdout() {
    // A machine_id line in user-data loses to IMDS's instance id, with a warning.
    let imds = Imds::start(with_user_data(
        b"environment=prod\nrole=web\ncontext=b\nmachine_id=i-other\n",
    ));
    let out = identity(&imds, "", &["-v", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("WARN ignoring machine_id in user-data"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("DEBUG"), "{}", out.stderr);
    assert!(
        !out.stderr.contains('\x1b'),
        "ANSI escapes on a pipe: {:?}",
        out.stderr
    );
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("stdout is only the JSON");
    assert_eq!(json["machine_id"], imds::INSTANCE_ID);
    assert!(json["extra"].get("machine_id").is_none());

    let out = identity(&imds, "", &["-q"]);
    assert_eq!(out.code, 0);
    assert!(out.stderr.is_empty(), "-q shows errors only: {}", out.stderr);
}

/// The emulator itself keeps to the AWS documentation; every test above relies on it.
#[test]
fn emulator_follows_the_documented_rules() {
    let imds = Imds::start(with_user_data(b"role=web\n"));
    let base = imds.endpoint();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        bootlace::tls::init();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let put = |ttl: Option<&str>| {
            let mut request = http.put(format!("{base}/latest/api/token"));
            if let Some(ttl) = ttl {
                request = request.header("X-aws-ec2-metadata-token-ttl-seconds", ttl);
            }
            request.send()
        };
        for bad in [None, Some("0"), Some("21601"), Some("soon")] {
            assert_eq!(put(bad).await.unwrap().status(), 400, "TTL {bad:?}");
        }
        let answer = put(Some("21600")).await.unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.headers()["x-aws-ec2-metadata-token-ttl-seconds"], "21600");
        let token = answer.text().await.unwrap();
        let get = |path: &str, token: Option<&str>| {
            let mut request = http.get(format!("{base}/latest/{path}"));
            if let Some(token) = token {
                request = request.header("X-aws-ec2-metadata-token", token);
            }
            request.send()
        };
        assert_eq!(
            http.get(format!("{base}/latest/api/token"))
                .send()
                .await
                .unwrap()
                .status(),
            405
        );
        assert_eq!(get("meta-data/instance-id", None).await.unwrap().status(), 401);
        assert_eq!(
            get("meta-data/instance-id", Some("forged"))
                .await
                .unwrap()
                .status(),
            401
        );
        let answer = get("meta-data/instance-id", Some(&token)).await.unwrap();
        assert_eq!(answer.text().await.unwrap(), imds::INSTANCE_ID);
        assert_eq!(
            get("user-data", Some(&token))
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
            "role=web\n"
        );
        assert_eq!(
            get("meta-data/nothing-here", Some(&token))
                .await
                .unwrap()
                .status(),
            404
        );
        let forwarded = http
            .put(format!("{base}/latest/api/token"))
            .header("X-aws-ec2-metadata-token-ttl-seconds", "60")
            .header("X-Forwarded-For", "203.0.113.1")
            .send();
        assert_eq!(forwarded.await.unwrap().status(), 403);
    });

    let no_user_data = Imds::start(Options {
        user_data: None,
        tokens: Tokens::Optional,
        ..Options::default()
    });
    runtime.block_on(async {
        bootlace::tls::init();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let answer = http
            .get(format!("{}/latest/user-data", no_user_data.endpoint()))
            .send();
        assert_eq!(
            answer.await.unwrap().status(),
            404,
            "IMDSv1 allowed, user-data absent"
        );
    });
}
