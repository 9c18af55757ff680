//! Opening a store from its URL: `file://` (the embedded default), `s3://`, `gs://`,
//! `az://`. For S3 the endpoint comes from `store.endpoint`, `AWS_ENDPOINT_URL_S3` or
//! `AWS_ENDPOINT_URL` (plain HTTP only when the endpoint says `http://`), credentials from
//! the standard chain, then the legacy user-data keys, then the instance role through
//! the same IMDS endpoint that identity uses.

use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, AwsCredential, AwsCredentialProvider};
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ClientOptions, CredentialProvider, ObjectStore, RetryConfig};
use secrecy::ExposeSecret;

use super::Config;
use super::role::{RoleCredentials, header_safe};
use super::{Guard, Store};
use crate::error::BadInput;
use crate::identity::imds::endpoint as imds_endpoint;
use crate::identity::userdata::Credentials;

/// Whether a command writes to the store: only then is a missing `file://` directory
/// created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// Opens the store that `config` names. `credentials` are the legacy user-data keys.
pub fn open(config: &Config, credentials: Option<&Credentials>, access: Access) -> anyhow::Result<Store> {
    crate::tls::init();
    let text = config.url.as_deref().ok_or_else(|| {
        BadInput("no store configured: set store.url in the config file, --store or BOOTLACE_STORE".into())
    })?;
    let url = reqwest::Url::parse(text)
        .map_err(|e| BadInput(format!("store URL {:?}: {e}", crate::text::printable(text, 200))))?;
    refuse_credentials(&url)?;
    let display = text.trim_end_matches('/').to_owned();
    // The URL's path is percent-encoded (`a%20b` is the folder `a b`); object_store
    // encodes a key's parts itself, so the prefix is decoded once, here.
    let prefix = ObjectPath::from_url_path(url.path())
        .map_err(|e| BadInput(format!("store URL {text:?}: its path: {e}")))?;
    let bad = |e: object_store::Error| BadInput(format!("store URL {text:?}: {}", describe(&e)));
    let prefers_ranges = url.scheme() != "file";
    let mut local_root = None;
    let (objects, prefix, guard): (Arc<dyn ObjectStore>, ObjectPath, Guard) = match url.scheme() {
        "file" => {
            let root = url
                .to_file_path()
                .map_err(|_| BadInput(format!("store URL {text:?}: not a local path")))?;
            if access == Access::Write {
                std::fs::create_dir_all(&root)
                    .map_err(|e| anyhow::anyhow!("creating store {}: {e}", root.display()))?;
            } else if !root.is_dir() {
                return Err(BadInput(format!("store {text:?}: no such directory")).into());
            }
            // Synced writes: after a crash a pointer never names a half-written manifest.
            let local = LocalFileSystem::new_with_prefix(&root)
                .map_err(bad)?
                .with_fsync(true);
            local_root = Some(root.clone());
            (
                Arc::new(local),
                ObjectPath::default(),
                Guard::LockFile(root.join(".bootlace.lock")),
            )
        }
        "s3" => {
            let s3 = s3_builder(text, config, credentials)?.build().map_err(bad)?;
            let guard = Guard::Probe {
                required: config.require_conditional_writes,
                probed: tokio::sync::OnceCell::new(),
            };
            (Arc::new(s3), prefix, guard)
        }
        "gs" => {
            let builder = GoogleCloudStorageBuilder::from_env().with_url(text);
            // As for S3, the endpoint's scheme decides: https://storage.googleapis.com
            // unless `GOOGLE_BASE_URL` (or the service account's `gcs_base_url`) names
            // another, such as an emulator's http:// address.
            let gcs = builder
                .with_retry(retry(config))
                .with_client_options(client_options(config).with_allow_http(true))
                .build()
                .map_err(bad)?;
            (Arc::new(gcs), prefix, Guard::Server)
        }
        "az" | "azure" => {
            let builder = MicrosoftAzureBuilder::from_env().with_url(text);
            let azure = builder
                .with_retry(retry(config))
                .with_client_options(client_options(config))
                .build()
                .map_err(bad)?;
            (Arc::new(azure), prefix, Guard::Server)
        }
        other => {
            return Err(BadInput(format!(
                "store URL {text:?}: unsupported scheme {other}: (use s3, file, gs or az)"
            ))
            .into());
        }
    };
    Ok(Store {
        objects,
        prefix: match prefix.as_ref() {
            "" => String::new(),
            encoded => format!("{encoded}/"),
        },
        prefix_path: prefix,
        local_root,
        takes_tags: url.scheme() == "s3",
        deadline: config.deadline,
        url: display,
        guard,
        prefers_ranges,
    })
}

/// A store URL names a place, never credentials: keys in it would be ignored by the
/// stores and echoed in every message, report and page that names the store.
fn refuse_credentials(url: &reqwest::Url) -> Result<(), BadInput> {
    if url.username().is_empty() && url.password().is_none() && url.query().is_none() {
        return Ok(());
    }
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    Err(BadInput(format!(
        "store URL {}: credentials or a query do not belong in a store URL (they would be \
         ignored and shown wherever the store is named); give credentials through the \
         environment (AWS_ACCESS_KEY_ID, ...) or the instance role",
        crate::text::printable(shown.as_str(), 200)
    )))
}

fn s3_builder(
    url: &str,
    config: &Config,
    credentials: Option<&Credentials>,
) -> anyhow::Result<AmazonS3Builder> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    // A tag is sent only where the config asks for one ([report] instance_tag), and
    // then it must arrive: AWS_DISABLE_TAGGING would drop it without a word.
    let mut builder = AmazonS3Builder::from_env()
        .with_url(url)
        .with_disable_tagging(false)
        .with_retry(retry(config));
    let endpoint = config
        .endpoint
        .clone()
        .or_else(|| env("AWS_ENDPOINT_URL_S3"))
        .or_else(|| env("AWS_ENDPOINT_URL"));
    let client =
        client_options(config).with_allow_http(endpoint.as_ref().is_some_and(|e| e.starts_with("http://")));
    builder = builder
        .with_client_options(client)
        .with_http_connector(super::http::Connector);
    if let Some(endpoint) = &endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_config(AmazonS3ConfigKey::S3Endpoint, endpoint);
    }
    if let Some(region) = &config.region {
        builder = builder.with_region(region);
    } else if env("AWS_REGION").is_none() && env("AWS_DEFAULT_REGION").is_none() {
        builder = builder.with_region("us-east-1");
    }
    with_credentials(builder, credentials)
}

/// `builder` with the credentials of the chain: `AWS_ACCESS_KEY_ID` and the rest of
/// the environment (web identity, container), then the legacy user-data keys, then the
/// instance role through the IMDS endpoint that identity uses.
fn with_credentials(
    mut builder: AmazonS3Builder,
    credentials: Option<&Credentials>,
) -> anyhow::Result<AmazonS3Builder> {
    let env_keys = std::env::var("AWS_ACCESS_KEY_ID").is_ok_and(|v| !v.trim().is_empty());
    match credentials {
        Some(keys) if !env_keys => {
            builder = builder
                .with_access_key_id(keys.access_key_id.expose_secret())
                .with_secret_access_key(keys.secret_access_key.expose_secret());
            if let Some(token) = &keys.session_token {
                builder = builder.with_token(token.expose_secret());
            }
        }
        // The environment's keys: the operator's, checked as object_store's signer
        // needs them (it panics on a header it cannot make).
        _ if env_keys => {
            for name in ["AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN"] {
                if std::env::var(name).is_ok_and(|v| !crate::text::is_header_token(&v)) {
                    return Err(BadInput(format!("{name} is not printable ASCII")).into());
                }
            }
        }
        // Keys from a web identity, a container or EKS Pod Identity endpoint, which the
        // environment configures: object_store's providers.
        _ if other_sources() => builder = checked(builder),
        // No keys: the instance role, through the IMDS endpoint identity uses.
        _ => match imds_endpoint::settings(false, |name| std::env::var(name).ok()) {
            Ok(imds) => builder = builder.with_credentials(Arc::new(RoleCredentials::new(imds))),
            Err(why) => {
                return Err(BadInput(format!(
                    "no AWS credentials: AWS_ACCESS_KEY_ID is not set and the instance role cannot be used ({})",
                    why.0
                ))
                .into());
            }
        },
    }
    Ok(builder)
}

/// Whether the environment names a credential source the SDKs try before the instance
/// role: a web identity token, or a container's credentials endpoint.
fn other_sources() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    (set("AWS_WEB_IDENTITY_TOKEN_FILE") && set("AWS_ROLE_ARN"))
        || set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        || (set("AWS_CONTAINER_CREDENTIALS_FULL_URI") && set("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"))
}

/// `builder` with its credential chain wrapped in [`Checked`]. When the builder cannot
/// be built, it is returned as it is, for its own build to say why.
fn checked(builder: AmazonS3Builder) -> AmazonS3Builder {
    match builder.clone().build() {
        Ok(s3) => builder.with_credentials(Arc::new(Checked(s3.credentials().clone()))),
        Err(_) => builder,
    }
}

/// The chain's keys, checked before they are signed with: object_store's signer panics
/// on a key id or session token that an HTTP header cannot carry.
#[derive(Debug)]
struct Checked(AwsCredentialProvider);

#[async_trait::async_trait]
impl CredentialProvider for Checked {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let credential = self.0.get_credential().await?;
        if header_safe(&credential) {
            return Ok(credential);
        }
        Err(object_store::Error::Generic {
            store: "S3",
            source: "the AWS credentials (key id or session token) are not printable ASCII".into(),
        })
    }
}

/// Credentials for other AWS services (SSM, Secrets Manager) in `region`: `keys`
/// (the user-data keys) when given, else the chain the S3 store uses (environment, web
/// identity, container, instance role), with its refreshing of expiring credentials.
pub fn aws_credentials(region: &str, keys: Option<AwsCredential>) -> anyhow::Result<AwsCredentialProvider> {
    if let Some(keys) = keys {
        return Ok(Arc::new(object_store::StaticCredentialProvider::new(keys)));
    }
    let builder = AmazonS3Builder::from_env()
        .with_bucket_name("bootlace-credentials")
        .with_region(region)
        .with_http_connector(super::http::Connector);
    let s3 = with_credentials(builder, None)?
        .build()
        .map_err(|e| anyhow::anyhow!("AWS credentials: {}", describe(&e)))?;
    Ok(s3.credentials().clone())
}

/// Timeouts that bound silence, never a transfer that is making progress: a connect,
/// and each read (headers or body), must succeed within `store.idle_timeout` (and
/// within `store.deadline`); a long download at a slow but steady rate goes on.
fn client_options(config: &Config) -> ClientOptions {
    let idle = config.idle_timeout.min(config.deadline).max(MIN_IDLE);
    ClientOptions::new()
        .with_timeout_disabled()
        .with_connect_timeout(idle.min(CONNECT_TIMEOUT))
        .with_read_timeout(idle)
}

/// A connect that takes longer than this will not succeed by waiting.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Below this, a busy but healthy server would look stalled.
const MIN_IDLE: std::time::Duration = std::time::Duration::from_millis(100);

/// Store calls retry with backoff and jitter until `store.deadline`.
fn retry(config: &Config) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: usize::MAX,
        retry_timeout: config.deadline,
    }
}

/// An `object_store` error as a short phrase for `error: <action> <url>: <phrase>`.
pub fn describe(err: &object_store::Error) -> String {
    use object_store::Error as E;
    let server = s3_error(&err.to_string());
    let explained = |text: &str| match &server {
        Some(why) => format!("{text}: {why}"),
        None => text.to_owned(),
    };
    match err {
        E::NotFound { .. } => "not found".into(),
        E::PermissionDenied { .. } => explained("access denied"),
        E::Unauthenticated { .. } => explained("not authenticated"),
        E::AlreadyExists { .. } => "already exists".into(),
        E::Precondition { .. } => "changed by another writer".into(),
        E::NotImplemented { operation, .. } => format!("not supported by this store: {operation}"),
        other => server.unwrap_or_else(|| innermost(other)),
    }
}

/// The innermost cause's first line, which says the most in the fewest words.
fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    let text = cause.to_string();
    let line = text.lines().next().unwrap_or_default().trim();
    line.chars().take(300).collect()
}

/// `Code: Message (status)` from an S3 XML error body quoted in a message.
fn s3_error(text: &str) -> Option<String> {
    let between = |open: &str, close: &str| {
        let start = text.find(open)? + open.len();
        let end = start + text[start..].find(close)?;
        Some(text[start..end].trim().to_owned())
    };
    let code = between("<Code>", "</Code>")?;
    let message = between("<Message>", "</Message>")
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    let status = between("status code: ", ":")
        .map(|s| format!(" ({s})"))
        .unwrap_or_default();
    Some(format!("{code}{message}{status}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_error_bodies_become_one_phrase() {
        let text = "Generic S3 error: Server returned non-2xx status code: 403 Forbidden: <?xml version=\"1.0\"?>\n\
                    <Error><Code>SignatureDoesNotMatch</Code><Message>The signature does not match.</Message></Error>";
        assert_eq!(
            s3_error(text).unwrap(),
            "SignatureDoesNotMatch: The signature does not match. (403 Forbidden)"
        );
        assert_eq!(s3_error("connection refused"), None);
    }

    #[test]
    fn a_host_in_any_script_becomes_its_ascii_name() {
        // The IDNA back end that Cargo.toml holds url to (idna_adapter 1.1) maps
        // non-ASCII hosts as UTS 46 says, like the default one.
        let url = reqwest::Url::parse("https://Bücher.example/releases").unwrap();
        assert_eq!(url.host_str(), Some("xn--bcher-kva.example"));
        assert!(reqwest::Url::parse("https://a\u{200b}\u{202e}b.example/").is_err());
    }
}
