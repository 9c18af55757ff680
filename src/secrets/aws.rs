//! The AWS calls secrets need: SSM `GetParameters` and `GetParameter` (decrypted),
//! Secrets Manager `BatchGetSecretValue` and `GetSecretValue`. The AWS JSON 1.1 protocol,
//! signed with SigV4 by the S3 store's own signer (`object_store`'s `AwsAuthorizer`) and
//! sent with the reqwest client bootlace already has. Credentials come from the same
//! chain as the S3 store's. Throttling, 5xx and connection failures are retried with
//! backoff and jitter until the deadline; any other answer fails at once with the
//! service's error code. Answers are read up to [`MAX_ANSWER`] bytes, and neither an
//! answer nor a parse error is ever quoted in a message: it could hold the value.

use std::time::{Duration, Instant};

use futures::StreamExt;
use object_store::aws::{AwsAuthorizer, AwsCredential, AwsCredentialProvider};
use object_store::client::{HttpRequest, HttpRequestBody};
use reqwest::Url;
use secrecy::zeroize::Zeroize;
use secrecy::{ExposeSecret, SecretSlice};

use super::Config;
use super::Service;
use super::answers::{CallError, error_of, read_batch, read_value};
use crate::error::BadInput;
use crate::identity::Identity;
use crate::retry::Backoff;

/// The most bytes of an answer read: Secrets Manager holds at most 64 KiB a secret,
/// which base64 and JSON make about 90 KiB.
const MAX_ANSWER: usize = 256 << 10;
const JSON_1_1: &str = "application/x-amz-json-1.1";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// One whole call, however steadily it trickles.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Single calls in flight at once, when a batch did not answer.
const SINGLE_CALLS: usize = 8;

/// Error codes that mean "slow down", which the SDKs retry.
const THROTTLED: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "SlowDown",
    "PriorRequestNotComplete",
];

/// Whether `err` comes from AWS not answering (as opposed to answering no).
pub fn unanswered(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|e| e.downcast_ref::<CallError>().is_some_and(|e| e.unanswered))
}

pub struct Client {
    http: reqwest::Client,
    region: String,
    credentials: AwsCredentialProvider,
    ssm: Url,
    secrets_manager: Url,
}

impl Client {
    /// Builds the client on a blocking thread: loading the system's root certificates
    /// takes milliseconds, during which the pointer read goes on.
    pub async fn new(config: &Config, identity: &Identity) -> anyhow::Result<Self> {
        crate::tls::init();
        let region = region(config, identity)?;
        let ssm = endpoint("AWS_ENDPOINT_URL_SSM", "ssm", &region)?;
        let secrets_manager = endpoint("AWS_ENDPOINT_URL_SECRETS_MANAGER", "secretsmanager", &region)?;
        let keys = identity.credentials.as_ref().map(|keys| AwsCredential {
            key_id: keys.access_key_id.expose_secret().to_owned(),
            secret_key: keys.secret_access_key.expose_secret().to_owned(),
            token: keys.session_token.as_ref().map(|t| t.expose_secret().to_owned()),
        });
        let building = {
            let region = region.clone();
            tokio::task::spawn_blocking(move || {
                let credentials = crate::store::aws_credentials(&region, keys)?;
                let http = reqwest::Client::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .read_timeout(READ_TIMEOUT)
                    .timeout(CALL_TIMEOUT)
                    .build()
                    .map_err(|e| anyhow::anyhow!("an HTTP client for secrets: {e}"))?;
                anyhow::Ok((credentials, http))
            })
        };
        let (credentials, http) = building
            .await
            .map_err(|e| anyhow::anyhow!("building the secrets client: {e}"))??;
        Ok(Self {
            ssm,
            secrets_manager,
            http,
            region,
            credentials,
        })
    }

    /// The values of `ids`, in their order: as few calls as the batch APIs allow
    /// (`GetParameters`, 10 names a call; `BatchGetSecretValue`, 20), then one call
    /// for each id a batch did not answer — a missing one, or all of them when the
    /// batch call itself failed (a policy that grants only the single-value action) —
    /// so that every error is the single call's, naming its id.
    pub async fn get_all(
        &self,
        service: Service,
        ids: &[&str],
        deadline: Instant,
    ) -> Vec<anyhow::Result<SecretSlice<u8>>> {
        let size = match service {
            Service::Ssm => 10,
            Service::SecretsManager => 20,
        };
        let batches =
            futures::future::join_all(ids.chunks(size).map(|chunk| self.batch(service, chunk, deadline)));
        let answered: Vec<Option<SecretSlice<u8>>> = batches.await.into_iter().flatten().collect();
        let rest = ids.iter().zip(answered).map(|(id, answer)| async move {
            match answer {
                Some(value) => Ok(value),
                None => self.get(service, id, deadline).await,
            }
        });
        futures::stream::iter(rest).buffered(SINGLE_CALLS).collect().await
    }

    /// One batch call for `ids`: the value of each it answered, `None` for the rest.
    async fn batch(&self, service: Service, ids: &[&str], deadline: Instant) -> Vec<Option<SecretSlice<u8>>> {
        let mut found: Vec<Option<SecretSlice<u8>>> = ids.iter().map(|_| None).collect();
        if ids.len() < 2 {
            return found;
        }
        let (target, body) = match service {
            Service::Ssm => (
                "AmazonSSM.GetParameters",
                serde_json::json!({"Names": ids, "WithDecryption": true}),
            ),
            Service::SecretsManager => (
                "secretsmanager.BatchGetSecretValue",
                serde_json::json!({"SecretIdList": ids}),
            ),
        };
        let mut answer = match self.call_until(service, target, &body, deadline).await {
            Ok(answer) => answer,
            Err(err) => {
                tracing::debug!("{target}: {err}; asking for each one instead");
                return found;
            }
        };
        for (names, value) in read_batch(service, &answer) {
            // Every item asking for it (one id may be named twice).
            for (id, slot) in ids.iter().zip(found.iter_mut()) {
                if slot.is_none() && names.iter().any(|n| n == id) {
                    *slot = Some(value.expose_secret().to_vec().into());
                }
            }
        }
        answer.zeroize();
        found
    }

    /// The value of parameter or secret `id`, trying again until `deadline` while
    /// AWS throttles or does not answer.
    pub async fn get(
        &self,
        service: Service,
        id: &str,
        deadline: Instant,
    ) -> anyhow::Result<SecretSlice<u8>> {
        let (target, body) = match service {
            Service::Ssm => (
                "AmazonSSM.GetParameter",
                serde_json::json!({"Name": id, "WithDecryption": true}),
            ),
            Service::SecretsManager => (
                "secretsmanager.GetSecretValue",
                serde_json::json!({"SecretId": id}),
            ),
        };
        let mut answer = self.call_until(service, target, &body, deadline).await?;
        let value = read_value(service, &answer);
        answer.zeroize();
        value
    }

    /// One call, tried again until `deadline` while AWS throttles or does not answer.
    async fn call_until(
        &self,
        service: Service,
        target: &str,
        body: &serde_json::Value,
        deadline: Instant,
    ) -> Result<Vec<u8>, CallError> {
        // The service's endpoint, and its name in SigV4's credential scope.
        let (url, signing_name) = match service {
            Service::Ssm => (&self.ssm, "ssm"),
            Service::SecretsManager => (&self.secrets_manager, "secretsmanager"),
        };
        let body = serde_json::to_vec(body).map_err(|e| CallError::refused(format!("{target}: {e}")))?;
        let mut backoff = Backoff::until(deadline);
        let mut tries = 0;
        loop {
            tries += 1;
            match self.call(url, target, signing_name, &body).await {
                Ok(answer) => return Ok(answer),
                Err(Call::Retry(reason)) => {
                    tracing::debug!("{target}: {reason}; trying again");
                    if !backoff.wait().await {
                        return Err(CallError::unanswered(format!(
                            "{reason} (gave up after {tries} tries, at secrets.deadline)"
                        )));
                    }
                }
                Err(Call::Fail(err)) => return Err(err),
            }
        }
    }

    /// One signed POST: the answer's bytes on success.
    async fn call(&self, url: &Url, target: &str, signing_name: &str, body: &[u8]) -> Result<Vec<u8>, Call> {
        let credential = self.credentials.get_credential().await.map_err(|e| {
            Call::Fail(CallError::unanswered(format!(
                "AWS credentials: {}",
                crate::store::describe(&e)
            )))
        })?;
        let headers = [("content-type", JSON_1_1), ("x-amz-target", target)];
        let mut signed: HttpRequest = headers
            .iter()
            .fold(http::Request::post(url.as_str()), |request, (name, value)| {
                request.header(*name, *value)
            })
            .body(HttpRequestBody::from(body.to_vec()))
            .map_err(|e| Call::Fail(CallError::refused(format!("{url}: {e}"))))?;
        AwsAuthorizer::new(&credential, signing_name, &self.region)
            .try_authorize(&mut signed, None)
            .map_err(|e| Call::Fail(CallError::refused(format!("signing the request: {e}"))))?;
        let mut request = self.http.post(url.clone()).body(body.to_vec());
        for (name, value) in signed.headers() {
            request = request.header(name, value);
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| Call::Retry(format!("{url}: {}", short(&e))))?;
        let status = response.status();
        let mut answer = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if answer.len() + chunk.len() <= MAX_ANSWER => {
                    answer.extend_from_slice(&chunk)
                }
                Ok(Some(_)) => {
                    answer.zeroize();
                    return Err(Call::Fail(CallError::refused(format!(
                        "{url}: an answer over {} KiB",
                        MAX_ANSWER >> 10
                    ))));
                }
                Ok(None) => break,
                Err(e) => {
                    answer.zeroize();
                    return Err(Call::Retry(format!("{url}: {}", short(&e))));
                }
            }
        }
        if status.is_success() {
            return Ok(answer);
        }
        let header = response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (code, message) = error_of(&answer, header);
        answer.zeroize();
        let reason = match message {
            Some(message) => format!("{code}: {message} ({status})"),
            None => format!("{code} ({status})"),
        };
        if status.is_server_error() || status.as_u16() == 429 || THROTTLED.contains(&code.as_str()) {
            return Err(Call::Retry(reason));
        }
        Err(Call::Fail(CallError::refused(reason)))
    }
}

enum Call {
    Retry(String),
    Fail(CallError),
}

/// A reqwest error's innermost cause, in a few words.
fn short(err: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    match (err.is_timeout(), err.is_connect()) {
        (true, _) => format!("timed out ({cause})"),
        (_, true) => format!("cannot connect ({cause})"),
        _ => cause.to_string(),
    }
}

/// `secrets.region`, the identity's region, `AWS_REGION`, `AWS_DEFAULT_REGION`.
fn region(config: &Config, identity: &Identity) -> anyhow::Result<String> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let region = config
        .region
        .clone()
        .or_else(|| identity.region.clone())
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .ok_or_else(|| {
            BadInput(
                "secrets: no AWS region: the identity gives none; set secrets.region or AWS_REGION".into(),
            )
        })?;
    let valid = !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid {
        return Err(BadInput(format!("secrets: region {region:?} is not an AWS region name")).into());
    }
    Ok(region)
}

/// `variable`, else `AWS_ENDPOINT_URL`, else the service's regional endpoint.
fn endpoint(variable: &str, service: &str, region: &str) -> anyhow::Result<Url> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let (name, text) = match env(variable) {
        Some(text) => (variable, text),
        None => match env("AWS_ENDPOINT_URL") {
            Some(text) => ("AWS_ENDPOINT_URL", text),
            None => return Ok(Url::parse(&format!("https://{service}.{region}.amazonaws.com/"))?),
        },
    };
    let url = Url::parse(&text).map_err(|e| BadInput(format!("{name} {text:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(BadInput(format!("{name} {text:?}: not an http or https URL")).into());
    }
    Ok(url)
}
