//! An IMDS emulator that follows the AWS documentation ("Use the Instance Metadata
//! Service to access instance metadata", "Configure the instance metadata options"):
//!
//! - `PUT /latest/api/token` needs `X-aws-ec2-metadata-token-ttl-seconds` between 1 and
//!   21600, else 400; any other method there is 405; it answers the token and its TTL;
//! - a GET with a token that is unknown or expired is 401; a GET without a token is
//!   401 when tokens are required (IMDSv2 only, the default here) and served otherwise;
//! - every request is 403 when the endpoint is disabled, and any request carrying
//!   `X-Forwarded-For` is 403;
//! - absent user-data is 404;
//! - with an instance role, `meta-data/iam/security-credentials/` lists its name and
//!   `…/security-credentials/<name>` answers fresh keys as JSON (`AccessKeyId`,
//!   `SecretAccessKey`, `Token`, `Expiration`, `Code: Success`), each set expiring
//!   after the role's TTL.
//!
//! Faults a test can set: a burst of 503s, slow answers, a late start, an expired or
//! always-rejected token, and a token endpoint that does not exist (an old IMDS or a
//! proxy in the way). It listens on 127.0.0.1 only, and records every request.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

pub const INSTANCE_ID: &str = "i-0123456789abcdef0";
pub const REGION: &str = "eu-west-1";
pub const AVAILABILITY_ZONE: &str = "eu-west-1b";
pub const INSTANCE_TYPE: &str = "t3.micro";

const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tokens {
    /// IMDSv2 only (`HttpTokens=required`).
    Required,
    /// IMDSv1 and v2 (`HttpTokens=optional`).
    Optional,
    /// No token endpoint at all (404): IMDSv1 only.
    Unsupported,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub user_data: Option<Vec<u8>>,
    pub tokens: Tokens,
    /// `HttpEndpoint=disabled`.
    pub disabled: bool,
    /// The next this many requests are answered 503.
    pub fail_next: u32,
    /// The next this many requests are answered after `delay`.
    pub slow_next: u32,
    pub delay: Duration,
    /// Listening starts this long after `start`.
    pub start_after: Duration,
    /// The first token issued is already expired.
    pub expire_first_token: bool,
    /// Every token is rejected.
    pub reject_tokens: bool,
    /// An instance role whose credentials expire this long after each is issued.
    pub role_credentials_ttl: Option<Duration>,
    /// The role's session token as a compromised instance serves it, instead of a
    /// fresh one.
    pub role_token: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            user_data: Some(b"environment=prod\nrole=memcached\ncontext=b\n".to_vec()),
            tokens: Tokens::Required,
            disabled: false,
            fail_next: 0,
            slow_next: 0,
            delay: Duration::ZERO,
            start_after: Duration::ZERO,
            expire_first_token: false,
            reject_tokens: false,
            role_credentials_ttl: None,
            role_token: None,
        }
    }
}

/// One request as the emulator saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub status: StatusCode,
}

struct State {
    options: Options,
    tokens: HashMap<String, Instant>,
    issued: u32,
    ttls: Vec<u32>,
    seen: Vec<Seen>,
}

pub struct Imds {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Imds {
    /// A compromised instance's metadata service: its role's credentials (valid for an
    /// hour) carry `token` as their session token.
    pub fn with_role_token(token: &str) -> Self {
        Self::start(Options {
            role_credentials_ttl: Some(std::time::Duration::from_secs(3600)),
            role_token: Some(token.into()),
            ..Options::default()
        })
    }

    pub fn start(options: Options) -> Self {
        // Reserve a free port now; a late start binds it again later.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let addr = listener.local_addr().unwrap();
        let start_after = options.start_after;
        let listener = if start_after.is_zero() {
            Some(listener)
        } else {
            None
        };
        let state = Arc::new(Mutex::new(State {
            options,
            tokens: HashMap::new(),
            issued: 0,
            ttls: Vec::new(),
            seen: Vec::new(),
        }));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let served = state.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(serve(addr, listener, start_after, served, stopped));
        });
        Self {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The value for `AWS_EC2_METADATA_SERVICE_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Every token issued so far.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.state.lock().unwrap().tokens.keys().cloned().collect()
    }

    /// The TTL each issued token was asked for.
    pub fn ttls(&self) -> Vec<u32> {
        self.state.lock().unwrap().ttls.clone()
    }

    /// How many token PUTs arrived.
    pub fn token_requests(&self) -> usize {
        self.seen().iter().filter(|s| s.method == Method::PUT).count()
    }
}

impl Drop for Imds {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    addr: SocketAddr,
    listener: Option<std::net::TcpListener>,
    start_after: Duration,
    state: Arc<Mutex<State>>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = match listener {
        Some(listener) => {
            listener.set_nonblocking(true).unwrap();
            tokio::net::TcpListener::from_std(listener).unwrap()
        }
        None => {
            tokio::select! {
                _ = tokio::time::sleep(start_after) => {}
                _ = &mut stopped => return,
            }
            tokio::net::TcpListener::bind(addr)
                .await
                .expect("binding the reserved port again")
        }
    };
    serve_http(listener, &mut stopped, move |request| {
        answer(state.clone(), request)
    })
    .await;
}

async fn answer(
    state: Arc<Mutex<State>>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    // Decided and recorded on arrival, so a request whose client gave up during a
    // delay is still seen.
    let (status, body, ttl, delay) = {
        let mut state = state.lock().unwrap();
        let (status, body, ttl) = decide(&mut state, &request);
        state.seen.push(Seen {
            method: request.method().clone(),
            path: request.uri().path().to_owned(),
            status,
        });
        let slow = state.options.slow_next > 0;
        if slow {
            state.options.slow_next -= 1;
        }
        (status, body, ttl, slow.then_some(state.options.delay))
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let mut response = Response::builder().status(status);
    if let Some(ttl) = ttl {
        response = response.header(TTL_HEADER, ttl);
    }
    Ok(response.body(Full::new(Bytes::from(body))).unwrap())
}

fn decide(state: &mut State, request: &Request<Incoming>) -> (StatusCode, Vec<u8>, Option<u32>) {
    let headers = request.headers();
    if state.options.disabled || headers.contains_key("x-forwarded-for") {
        return (StatusCode::FORBIDDEN, Vec::new(), None);
    }
    if state.options.fail_next > 0 {
        state.options.fail_next -= 1;
        return (StatusCode::SERVICE_UNAVAILABLE, Vec::new(), None);
    }
    let path = request.uri().path();
    if path == "/latest/api/token" {
        return token(state, request);
    }
    if request.method() != Method::GET {
        return (StatusCode::METHOD_NOT_ALLOWED, Vec::new(), None);
    }
    let authorised = match headers.get(TOKEN_HEADER) {
        Some(token) => {
            let valid = token
                .to_str()
                .ok()
                .and_then(|t| state.tokens.get(t))
                .is_some_and(|expires| Instant::now() < *expires);
            valid && !state.options.reject_tokens
        }
        None => state.options.tokens != Tokens::Required,
    };
    if !authorised {
        return (StatusCode::UNAUTHORIZED, Vec::new(), None);
    }
    let value = match path {
        "/latest/meta-data/instance-id" => Some(INSTANCE_ID.as_bytes().to_vec()),
        "/latest/meta-data/placement/region" => Some(REGION.as_bytes().to_vec()),
        "/latest/meta-data/placement/availability-zone" => Some(AVAILABILITY_ZONE.as_bytes().to_vec()),
        "/latest/meta-data/instance-type" => Some(INSTANCE_TYPE.as_bytes().to_vec()),
        "/latest/user-data" => state.options.user_data.clone(),
        "/latest/meta-data/iam/security-credentials/" => state
            .options
            .role_credentials_ttl
            .map(|_| ROLE.as_bytes().to_vec()),
        path if path == format!("/latest/meta-data/iam/security-credentials/{ROLE}") => {
            let token = state.options.role_token.clone();
            state
                .options
                .role_credentials_ttl
                .map(|ttl| role_credentials(ttl, token))
        }
        _ => None,
    };
    match value {
        Some(body) => (StatusCode::OK, body, None),
        None => (StatusCode::NOT_FOUND, Vec::new(), None),
    }
}

/// The instance role's name.
pub const ROLE: &str = "bootlace-test-role";

/// A fresh set of role credentials, expiring `ttl` from now.
fn role_credentials(ttl: Duration, token: Option<String>) -> Vec<u8> {
    let now = std::time::SystemTime::now();
    let at = |t: std::time::SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    let serial = now.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let token = token.unwrap_or_else(|| format!("role-token-{serial}"));
    serde_json::json!({
        "Code": "Success",
        "LastUpdated": at(now),
        "Type": "AWS-HMAC",
        "AccessKeyId": format!("ASIAROLE{serial}"),
        "SecretAccessKey": format!("role-secret-{serial}"),
        "Token": token,
        "Expiration": at(now + ttl),
    })
    .to_string()
    .into_bytes()
}

fn token(state: &mut State, request: &Request<Incoming>) -> (StatusCode, Vec<u8>, Option<u32>) {
    if state.options.tokens == Tokens::Unsupported {
        return (StatusCode::NOT_FOUND, Vec::new(), None);
    }
    if request.method() != Method::PUT {
        return (StatusCode::METHOD_NOT_ALLOWED, Vec::new(), None);
    }
    let ttl = request
        .headers()
        .get(TTL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|ttl| (1..=21600).contains(ttl));
    let Some(ttl) = ttl else {
        return (StatusCode::BAD_REQUEST, Vec::new(), None);
    };
    state.issued += 1;
    state.ttls.push(ttl);
    let token: String = std::iter::repeat_with(fastrand::alphanumeric).take(56).collect();
    let expires = if state.options.expire_first_token && state.issued == 1 {
        Instant::now()
    } else {
        Instant::now() + Duration::from_secs(ttl.into())
    };
    state.tokens.insert(token.clone(), expires);
    (StatusCode::OK, token.into_bytes(), Some(ttl))
}

/// A test server's connections (this emulator's, and `gcs.rs`'s): each accepted and
/// served over HTTP/1 with `answer`, until `stopped` fires.
pub async fn serve_http<F, A>(
    listener: tokio::net::TcpListener,
    stopped: &mut tokio::sync::oneshot::Receiver<()>,
    answer: F,
) where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> A + Clone + Send + 'static,
    A: std::future::Future<
            Output = Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, std::convert::Infallible>,
        > + Send
        + 'static,
{
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            _ = &mut *stopped => return,
        };
        let answer = answer.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(answer);
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}
