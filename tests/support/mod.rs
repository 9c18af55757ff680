//! What the black-box tests share: the built binary run as a user would, in an
//! environment that can only ever reach loopback.

#![allow(dead_code)]

pub mod archives;
pub mod aws;
pub mod azure;
pub mod backend;
pub mod faulty;
pub mod fleet;
pub mod gcs;
pub mod host;
pub mod imds;
pub mod proxy;
pub mod s3;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A loopback address where nothing listens: the IMDS endpoint of every test that
/// does not start an emulator, so no credential chain can reach a real one.
pub const DEAD_ENDPOINT: &str = "http://127.0.0.1:9";

/// `bootlace` with a clean, loopback-only environment and no config file.
pub fn bootlace() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bootlace"));
    const CLOUDS: [&str; 6] = ["AWS_", "AZURE_", "AZURITE_", "GOOGLE_", "GCE_", "BOOTLACE_"];
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if CLOUDS.iter().any(|cloud| name.starts_with(cloud)) || name.ends_with("_proxy") {
            command.env_remove(&name);
        }
    }
    // Every cloud's credential chain ends at its metadata service: each is pointed here.
    let dead_host = DEAD_ENDPOINT.trim_start_matches("http://");
    command
        .env("GCE_METADATA_HOST", dead_host)
        .env("GCE_METADATA_IP", dead_host)
        .env(
            "IDENTITY_ENDPOINT",
            format!("{DEAD_ENDPOINT}/metadata/identity/oauth2/token"),
        )
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", DEAD_ENDPOINT)
        .env("AWS_ACCESS_KEY_ID", "test-access-key")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret-key")
        .env("AWS_REGION", "us-east-1")
        .env("BOOTLACE_CONFIG", "/dev/null")
        .stdin(Stdio::null());
    command
}

/// `program` with the environment that `template` would run with: to wrap bootlace
/// in another program (`/usr/bin/time`, `unshare`).
pub fn with_env_of(template: &Command, program: &str) -> Command {
    let mut command = Command::new(program);
    for (key, value) in template.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    command.stdin(Stdio::null());
    command
}

/// Runs bootlace with `args` under `/usr/bin/time`, in the environment `template` would
/// run with: what it left, and its peak RSS in KiB.
pub fn with_peak_rss(template: &Command, args: &[&str]) -> (Outcome, u64) {
    let out = run(with_env_of(template, "/usr/bin/time")
        .args(["-f", "maxrss=%M", env!("CARGO_BIN_EXE_bootlace")])
        .args(args));
    let rss = out
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("maxrss="))
        .and_then(|kib| kib.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS from /usr/bin/time in: {}", out.stderr));
    (out, rss)
}

/// What a finished command left.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// stdout and stderr together, for "never appears anywhere" checks.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// Asserts the one-line error contract: exactly one `error: ` line, no panic.
    pub fn assert_one_error_line(&self) -> &str {
        assert!(!self.stderr.contains("panicked"), "panic: {}", self.stderr);
        let errors: Vec<&str> = self.stderr.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(errors.len(), 1, "expected one error line in: {}", self.stderr);
        errors[0]
    }
}

pub fn run(command: &mut Command) -> Outcome {
    let output = command.output().expect("running bootlace");
    Outcome {
        code: output.status.code().expect("bootlace ended by a signal"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Closes a connection with RST rather than FIN: SO_LINGER with a zero timeout.
pub fn reset(stream: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// `minisign ARGS` in `dir`, `stdin` fed to it: its exit code and output.
pub fn minisign(dir: &Path, args: &[&str], stdin: &str) -> (i32, String) {
    use std::io::Write;
    let mut child = Command::new("minisign")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the minisign CLI is needed for this test: apt-get install minisign (scripts/test.sh does)");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}
