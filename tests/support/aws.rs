//! SSM Parameter Store and Secrets Manager in `moto_server`, set up around bootlace:
//! AWS JSON 1.1 calls with a SigV4-shaped `Authorization` header, by which moto picks
//! the service and region (it checks signatures only when IAM auth is on, and then
//! only after the set-up calls `INITIAL_NO_AUTH_ACTION_COUNT` lets through).

use serde_json::{Value, json};

use super::s3::block_on;

/// The region every test instance signs for (`AWS_REGION` in [`super::bootlace`]).
pub const REGION: &str = "us-east-1";

/// One AWS JSON 1.1 call in [`REGION`]: the status and the answer.
pub fn call(endpoint: &str, service: &str, target: &str, body: Value) -> (u16, Value) {
    call_in(endpoint, REGION, service, target, body)
}

/// One AWS JSON 1.1 call in `region`.
pub fn call_in(endpoint: &str, region: &str, service: &str, target: &str, body: Value) -> (u16, Value) {
    let scope = format!("Credential=test-access-key/20260101/{region}/{service}/aws4_request");
    let answer = block_on(async {
        bootlace::tls::init();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let response = http
            .post(format!("{}/", endpoint.trim_end_matches('/')))
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", target)
            .header(
                "authorization",
                format!("AWS4-HMAC-SHA256 {scope}, SignedHeaders=host, Signature=00"),
            )
            .body(body.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{target} to {endpoint}: {e}"));
        let status = response.status().as_u16();
        (status, response.bytes().await.unwrap())
    });
    let value = serde_json::from_slice(&answer.1).unwrap_or(Value::Null);
    (answer.0, value)
}

/// Creates or overwrites SecureString parameter `name`.
pub fn put_parameter(endpoint: &str, name: &str, value: &str) {
    put_parameter_in(endpoint, REGION, name, value);
}

/// Creates or overwrites SecureString parameter `name` in `region`.
pub fn put_parameter_in(endpoint: &str, region: &str, name: &str, value: &str) {
    let body = json!({"Name": name, "Value": value, "Type": "SecureString", "Overwrite": true});
    let (status, answer) = call_in(endpoint, region, "ssm", "AmazonSSM.PutParameter", body);
    assert_eq!(status, 200, "PutParameter {name}: {answer}");
}

/// Creates secret `name` with a string value, or puts a new current value.
pub fn put_secret(endpoint: &str, name: &str, value: &str) {
    let body = json!({"Name": name, "SecretString": value});
    let (status, answer) = call(endpoint, "secretsmanager", "secretsmanager.CreateSecret", body);
    if status == 200 {
        return;
    }
    let body = json!({"SecretId": name, "SecretString": value});
    let (status, again) = call(endpoint, "secretsmanager", "secretsmanager.PutSecretValue", body);
    assert_eq!(
        status, 200,
        "CreateSecret {name}: {answer}; PutSecretValue: {again}"
    );
}

/// Creates secret `name` with a binary value.
pub fn put_binary_secret(endpoint: &str, name: &str, value: &[u8]) {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(value);
    let body = json!({"Name": name, "SecretBinary": encoded});
    let (status, answer) = call(endpoint, "secretsmanager", "secretsmanager.CreateSecret", body);
    assert_eq!(status, 200, "CreateSecret {name}: {answer}");
}

/// An IAM query-protocol call (form-encoded), for users, keys and policies: the
/// status and the XML answer.
pub fn iam(endpoint: &str, params: &[(&str, &str)]) -> (u16, String) {
    let scope = format!("Credential=test-access-key/20260101/{REGION}/iam/aws4_request");
    let mut form: Vec<(&str, &str)> = vec![("Version", "2010-05-08")];
    form.extend_from_slice(params);
    let body = form
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    block_on(async {
        bootlace::tls::init();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let response = http
            .post(format!("{}/", endpoint.trim_end_matches('/')))
            .header("content-type", "application/x-www-form-urlencoded")
            .header(
                "authorization",
                format!("AWS4-HMAC-SHA256 {scope}, SignedHeaders=host, Signature=00"),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    })
}

/// The text of the first `<tag>` in `xml`.
pub fn xml_field(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = xml.find(&open).unwrap_or_else(|| panic!("no <{tag}> in {xml}")) + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>")).unwrap();
    xml[start..end].to_owned()
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
