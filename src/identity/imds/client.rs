//! An IMDS client that follows the AWS SDKs: an IMDSv2 session token (cached, fetched
//! again once on 401), IMDSv1 only when allowed, retries with backoff and jitter on
//! connect errors, timeouts, 429 and 5xx until the identity deadline, and a short
//! timeout on every attempt. The token is held as a sensitive header value, so it
//! never shows in a `Debug` print, and it is never logged.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use tracing::{debug, warn};

use crate::retry::Backoff;

const TOKEN_PATH: &str = "api/token";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_TTL: Duration = Duration::from_secs(21600);
/// A token is renewed this long before IMDS would expire it.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const READ_TIMEOUT: Duration = Duration::from_secs(2);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// No IMDS answer bootlace reads is near this; a larger one is not IMDS.
const MAX_ANSWER_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ImdsError {
    #[error("IMDS is disabled: the token request was answered 403 Forbidden")]
    Disabled,
    #[error("no answer within the identity deadline of {budget}: {last}")]
    Unreachable { budget: String, last: String },
    #[error("the token request was answered {status}, and IMDSv1 fallback is off")]
    NoToken { status: StatusCode },
    #[error("answered {status}{hint}")]
    Refused { status: StatusCode, hint: &'static str },
    #[error("the answer is larger than {MAX_ANSWER_BYTES} bytes")]
    TooLarge,
    #[error("the token is not a valid header value")]
    BadToken,
}

/// What one attempt came to, when it did not succeed.
enum Failure {
    /// Worth trying again (connect error, timeout, 429, 5xx); the text says why.
    Transient(String),
    Fatal(ImdsError),
}

#[derive(Debug)]
enum Token {
    Unknown,
    V2 {
        header: HeaderValue,
        renew_at: Instant,
    },
    /// IMDS offers no tokens and IMDSv1 is allowed.
    V1,
}

#[derive(Debug)]
pub struct ImdsClient {
    http: reqwest::Client,
    endpoint: String,
    v1_allowed: bool,
    deadline: Instant,
    budget: Duration,
    token: Token,
}

impl ImdsClient {
    pub fn new(endpoint: String, v1_allowed: bool, deadline: Instant) -> anyhow::Result<Self> {
        crate::tls::init();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none());
        if endpoint.starts_with("http://") {
            // Plain HTTP needs no roots; loading the system's would cost most of the
            // identity step (about 5 ms of certificate files).
            builder = builder.tls_certs_only([]);
        }
        let http = builder.build()?;
        Ok(Self {
            http,
            endpoint,
            v1_allowed,
            budget: deadline.saturating_duration_since(Instant::now()),
            deadline,
            token: Token::Unknown,
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// GETs `/latest/{path}`; `Ok(None)` on 404.
    pub async fn get(&mut self, path: &str) -> Result<Option<Vec<u8>>, ImdsError> {
        let url = format!("{}/latest/{path}", self.endpoint);
        let mut backoff = Backoff::until(self.deadline);
        let mut renewed = false;
        loop {
            let token = self.token(&mut backoff).await?;
            let mut request = self.http.get(&url).timeout(attempt_timeout(&backoff));
            if let Some(token) = &token {
                request = request.header(TOKEN_HEADER, token.clone());
            }
            let failure = match request.send().await {
                Err(err) => Failure::Transient(describe(&err)),
                Ok(response) => match response.status() {
                    StatusCode::OK => match read_answer(response).await {
                        Ok(body) => return Ok(Some(body)),
                        Err(failure) => failure,
                    },
                    StatusCode::NOT_FOUND => return Ok(None),
                    StatusCode::UNAUTHORIZED if token.is_some() && !renewed => {
                        debug!("IMDS rejected the session token for {path}; fetching a new one");
                        self.token = Token::Unknown;
                        renewed = true;
                        continue;
                    }
                    status => refused(status, token.is_some()),
                },
            };
            match failure {
                Failure::Fatal(err) => return Err(err),
                Failure::Transient(why) => {
                    debug!("IMDS GET {path}: {why}; retrying");
                    if !backoff.wait().await {
                        return Err(self.unreachable(why));
                    }
                }
            }
        }
    }

    /// The session token header, fetched when there is none or it is near expiry;
    /// `None` in IMDSv1 mode.
    async fn token(&mut self, backoff: &mut Backoff) -> Result<Option<HeaderValue>, ImdsError> {
        match &self.token {
            Token::V1 => return Ok(None),
            Token::V2 { header, renew_at } if Instant::now() < *renew_at => {
                return Ok(Some(header.clone()));
            }
            _ => {}
        }
        let url = format!("{}/latest/{TOKEN_PATH}", self.endpoint);
        loop {
            let request = self
                .http
                .put(&url)
                .header(TTL_HEADER, TOKEN_TTL.as_secs())
                .timeout(attempt_timeout(backoff));
            let failure = match request.send().await {
                Err(err) => Failure::Transient(describe(&err)),
                Ok(response) => match response.status() {
                    StatusCode::OK => match read_answer(response).await {
                        Ok(body) => return self.keep_token(body).map(Some),
                        Err(failure) => failure,
                    },
                    StatusCode::FORBIDDEN => Failure::Fatal(ImdsError::Disabled),
                    status if is_transient(status) => Failure::Transient(status.to_string()),
                    status if self.v1_allowed => {
                        warn!(
                            "IMDS answered {status} to the token request; using IMDSv1 (identity.imds_v1_fallback)"
                        );
                        self.token = Token::V1;
                        return Ok(None);
                    }
                    status => Failure::Fatal(ImdsError::NoToken { status }),
                },
            };
            match failure {
                Failure::Fatal(err) => return Err(err),
                Failure::Transient(why) => {
                    debug!("IMDS token request: {why}; retrying");
                    if !backoff.wait().await {
                        return Err(self.unreachable(why));
                    }
                }
            }
        }
    }

    fn keep_token(&mut self, body: Vec<u8>) -> Result<HeaderValue, ImdsError> {
        let mut header = HeaderValue::from_bytes(body.trim_ascii()).map_err(|_| ImdsError::BadToken)?;
        header.set_sensitive(true);
        self.token = Token::V2 {
            header: header.clone(),
            renew_at: Instant::now() + TOKEN_TTL - TOKEN_MARGIN,
        };
        debug!("IMDS session token fetched");
        Ok(header)
    }

    fn unreachable(&self, last: String) -> ImdsError {
        ImdsError::Unreachable {
            // Rounded up to a tenth of a second: the budget is a setting, not a measurement.
            budget: humantime::format_duration(Duration::from_millis(
                self.budget.as_millis().div_ceil(100) as u64 * 100,
            ))
            .to_string(),
            last,
        }
    }
}

fn is_transient(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

fn refused(status: StatusCode, had_token: bool) -> Failure {
    if is_transient(status) {
        return Failure::Transient(status.to_string());
    }
    let hint = match status {
        StatusCode::UNAUTHORIZED if had_token => " to a fresh session token",
        StatusCode::UNAUTHORIZED => " (IMDS requires IMDSv2 session tokens)",
        StatusCode::FORBIDDEN => " (IMDS is disabled, or the request was refused)",
        _ => "",
    };
    Failure::Fatal(ImdsError::Refused { status, hint })
}

/// The per-attempt timeout, never past the deadline.
fn attempt_timeout(backoff: &Backoff) -> Duration {
    ATTEMPT_TIMEOUT
        .min(backoff.remaining())
        .max(Duration::from_millis(1))
}

async fn read_answer(mut response: reqwest::Response) -> Result<Vec<u8>, Failure> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() > MAX_ANSWER_BYTES => {
                return Err(Failure::Fatal(ImdsError::TooLarge));
            }
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => return Ok(body),
            Err(err) => return Err(Failure::Transient(describe(&err))),
        }
    }
}

/// A transport error as one short phrase: the innermost cause says the most.
fn describe(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        return "timed out".into();
    }
    let mut cause: &dyn std::error::Error = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    if err.is_connect() {
        format!("cannot connect: {cause}")
    } else {
        cause.to_string()
    }
}
