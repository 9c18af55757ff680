//! Azurite, Microsoft's Azure Storage emulator (npm `azurite@3.35.0`, installed into
//! `.node` by `scripts/test.sh`): its Blob service on a free loopback port, one per test
//! binary, stopped when the binary exits, with the one container [`BUCKET`]. bootlace
//! reaches it as an operator would reach Azurite, through `AZURE_STORAGE_USE_EMULATOR`
//! and `AZURITE_BLOB_STORAGE_URL`.
//!
//! Azurite answers a failed `If-None-Match: *` with 409 where Azure answers 412.

use std::sync::{Arc, OnceLock};

use object_store::azure::MicrosoftAzureBuilder;

use super::s3::{BUCKET, Server, block_on, free_port, scratch_dir, start};

/// Azurite's development account and its published key ("Use the Azurite emulator for
/// local Azure Storage development": the well-known storage account and key).
pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// The Blob service REST version the container is created with.
const VERSION: &str = "2021-10-04";

static AZURITE: OnceLock<Server> = OnceLock::new();

pub fn azurite() -> &'static Server {
    AZURITE.get_or_init(|| {
        let port = free_port();
        let root = scratch_dir();
        let args = [
            "--blobHost".to_owned(),
            "127.0.0.1".to_owned(),
            "--blobPort".to_owned(),
            port.to_string(),
            "--location".to_owned(),
            root.display().to_string(),
            "--skipApiVersionCheck".to_owned(),
            "--disableTelemetry".to_owned(),
        ];
        let install = "npm install --prefix .node azurite@3.35.0";
        let process = start("azurite-blob", install, &args, port, Some(root), &[]);
        let endpoint = format!("http://127.0.0.1:{port}");
        create_container(&endpoint, BUCKET);
        bootlace::tls::init();
        // Path-style, as Azurite serves: the account is the path's first segment.
        let direct = MicrosoftAzureBuilder::new()
            .with_account(ACCOUNT)
            .with_access_key(KEY)
            .with_endpoint(format!("{endpoint}/{ACCOUNT}"))
            .with_container_name(BUCKET)
            .with_allow_http(true)
            .build()
            .unwrap();
        Server::new(endpoint, Arc::new(direct), process)
    })
}

/// "Create Container", authorized with Shared Key ("Authorize with Shared Key": the
/// string to sign is the verb, eleven empty standard headers, the `x-ms-` headers, and
/// the resource `/<account>/<path>` with its query parameters).
fn create_container(endpoint: &str, name: &str) {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::STANDARD;
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let resource = format!("/{ACCOUNT}/{ACCOUNT}/{name}\nrestype:container");
    let to_sign = format!("PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{VERSION}\n{resource}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &engine.decode(KEY).unwrap());
    let signature = engine.encode(ring::hmac::sign(&key, to_sign.as_bytes()));
    let url = format!("{endpoint}/{ACCOUNT}/{name}?restype=container");
    let status = block_on(async {
        bootlace::tls::init();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        http.put(&url)
            .header("x-ms-date", &date)
            .header("x-ms-version", VERSION)
            .header("authorization", format!("SharedKey {ACCOUNT}:{signature}"))
            .header("content-length", "0")
            .send()
            .await
            .map(|answer| answer.status())
    });
    match status {
        Ok(status) => assert!(status.is_success(), "creating container {url}: {status}"),
        Err(err) => panic!("creating container {url}: {err}"),
    }
}
