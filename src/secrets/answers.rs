//! The answers of SSM and Secrets Manager (AWS JSON 1.1): a value, a batch of values
//! with the names each answers to, an error's code and message, and a failed call. A value is never
//! quoted in an error: a parse error could hold it.

use secrecy::{ExposeSecret, SecretSlice, SecretString};
use serde::Deserialize;

use super::Service;

/// A call that failed: `unanswered` when AWS could not be reached or kept throttling
/// (worth trying again later), not when it answered no.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct CallError {
    pub unanswered: bool,
    reason: String,
}

impl CallError {
    pub fn unanswered(reason: String) -> Self {
        Self {
            unanswered: true,
            reason,
        }
    }

    pub(super) fn refused(reason: String) -> Self {
        Self {
            unanswered: false,
            reason,
        }
    }
}

/// A Secrets Manager value, as `GetSecretValue` and `BatchGetSecretValue` give it.
#[derive(Deserialize)]
struct SecretValue {
    #[serde(rename = "SecretString")]
    string: Option<SecretString>,
    #[serde(rename = "SecretBinary")]
    binary: Option<SecretString>,
}

impl SecretValue {
    fn bytes(self) -> Result<SecretSlice<u8>, CallError> {
        match (self.string, self.binary) {
            (Some(text), _) => Ok(text.expose_secret().as_bytes().to_vec().into()),
            (None, Some(encoded)) => {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(encoded.expose_secret())
                    .map(Into::into)
                    .map_err(|_| CallError::refused("a SecretBinary that is not base64".into()))
            }
            (None, None) => Err(CallError::refused(
                "the secret has neither SecretString nor SecretBinary".into(),
            )),
        }
    }
}

/// The value in a successful single answer.
pub(super) fn read_value(service: Service, answer: &[u8]) -> anyhow::Result<SecretSlice<u8>> {
    #[derive(Deserialize)]
    struct Parameter {
        #[serde(rename = "Parameter")]
        parameter: Value,
    }
    #[derive(Deserialize)]
    struct Value {
        #[serde(rename = "Value")]
        value: SecretString,
    }
    // serde's messages can quote what they read: never passed on.
    let unreadable = |what: &str| CallError::refused(format!("an answer that is not {what} JSON"));
    match service {
        Service::Ssm => {
            let answer: Parameter = serde_json::from_slice(answer).map_err(|_| unreadable("GetParameter"))?;
            Ok(answer.parameter.value.expose_secret().as_bytes().to_vec().into())
        }
        Service::SecretsManager => {
            let answer: SecretValue =
                serde_json::from_slice(answer).map_err(|_| unreadable("GetSecretValue"))?;
            Ok(answer.bytes()?)
        }
    }
}

/// The values in a successful batch answer, each with the names it answers to (its
/// name, its ARN, and for SSM its name with the version or label selector asked for).
/// Ids the batch lists as invalid or failed are left out: their single calls say why.
pub(super) fn read_batch(service: Service, answer: &[u8]) -> Vec<(Vec<String>, SecretSlice<u8>)> {
    #[derive(Deserialize)]
    struct Parameters {
        #[serde(rename = "Parameters", default)]
        parameters: Vec<Parameter>,
    }
    #[derive(Deserialize)]
    struct Parameter {
        #[serde(rename = "Name")]
        name: String,
        #[serde(rename = "ARN")]
        arn: Option<String>,
        #[serde(rename = "Selector")]
        selector: Option<String>,
        #[serde(rename = "Value")]
        value: SecretString,
    }
    #[derive(Deserialize)]
    struct Secrets {
        #[serde(rename = "SecretValues", default)]
        values: Vec<Secret>,
    }
    #[derive(Deserialize)]
    struct Secret {
        #[serde(rename = "Name")]
        name: String,
        #[serde(rename = "ARN")]
        arn: Option<String>,
        #[serde(flatten)]
        value: SecretValue,
    }
    // An answer that does not parse answers nothing: each id is asked for alone.
    match service {
        Service::Ssm => serde_json::from_slice::<Parameters>(answer)
            .map(|answer| {
                answer
                    .parameters
                    .into_iter()
                    .map(|p| {
                        // Asked for with a version or label, it answers only to that.
                        let selector = p.selector.unwrap_or_default();
                        let mut names = vec![format!("{}{selector}", p.name)];
                        names.extend(p.arn.map(|arn| format!("{arn}{selector}")));
                        (names, p.value.expose_secret().as_bytes().to_vec().into())
                    })
                    .collect()
            })
            .unwrap_or_default(),
        Service::SecretsManager => serde_json::from_slice::<Secrets>(answer)
            .map(|answer| {
                answer
                    .values
                    .into_iter()
                    .filter_map(|s| {
                        let value = s.value.bytes().ok()?;
                        let mut names = vec![s.name];
                        names.extend(s.arn);
                        Some((names, value))
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// The error code (`ParameterNotFound`) and message of an AWS JSON error answer.
pub(super) fn error_of(answer: &[u8], header: Option<String>) -> (String, Option<String>) {
    #[derive(Deserialize)]
    struct Error {
        #[serde(rename = "__type")]
        kind: Option<String>,
        #[serde(alias = "Message")]
        message: Option<String>,
    }
    let parsed: Option<Error> = serde_json::from_slice(answer).ok();
    // Some front ends (and moto's IAM checks) answer in the query protocol's XML.
    let xml = |tag: &str| {
        let text = std::str::from_utf8(answer).ok()?;
        let open = format!("<{tag}>");
        let start = text.find(&open)? + open.len();
        let end = start + text[start..].find(&format!("</{tag}>"))?;
        Some(text[start..end].trim().to_owned())
    };
    let parsed = parsed.or_else(|| {
        Some(Error {
            kind: Some(xml("Code")?),
            message: xml("Message"),
        })
    });
    let kind = header
        .or_else(|| parsed.as_ref().and_then(|e| e.kind.clone()))
        .unwrap_or_else(|| "no error code".into());
    // `aws.protocols#…#ThrottlingException:http://…`: the name alone.
    let code = kind.rsplit('#').next().unwrap_or(&kind);
    let code = code.split(':').next().unwrap_or(code).trim().to_owned();
    let message = parsed
        .and_then(|e| e.message)
        .map(|m| {
            m.lines()
                .next()
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect::<String>()
        })
        .filter(|m| !m.trim().is_empty());
    (code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_read_from_the_body_or_the_header() {
        let body = br#"{"__type":"ParameterNotFound","message":"Parameter /x not found."}"#;
        assert_eq!(
            error_of(body, None),
            ("ParameterNotFound".into(), Some("Parameter /x not found.".into()))
        );
        let body = br#"{"__type":"com.amazonaws.ssm#ThrottlingException","Message":"Rate exceeded"}"#;
        assert_eq!(error_of(body, None).0, "ThrottlingException");
        let header = Some("AccessDeniedException:http://internal.amazon.com/".to_owned());
        assert_eq!(error_of(b"<html>", header).0, "AccessDeniedException");
        assert_eq!(error_of(b"", None), ("no error code".into(), None));
        let xml = b"<ErrorResponse><Errors><Error><Code>AccessDenied</Code><Message>User: x is not authorized</Message></Error></Errors></ErrorResponse>";
        assert_eq!(
            error_of(xml, None),
            ("AccessDenied".into(), Some("User: x is not authorized".into()))
        );
    }

    #[test]
    fn values_are_read_and_bad_answers_never_quoted() {
        let value = read_value(Service::Ssm, br#"{"Parameter":{"Name":"/a","Value":"s3cr3t"}}"#).unwrap();
        assert_eq!(value.expose_secret(), b"s3cr3t");
        let value = read_value(Service::SecretsManager, br#"{"SecretBinary":"AAEC"}"#).unwrap();
        assert_eq!(value.expose_secret(), &[0, 1, 2]);
        let err = read_value(Service::Ssm, br#"{"Parameter":{"Value":["s3cr3t"]}}"#).unwrap_err();
        assert!(!format!("{err:#}").contains("s3cr3t"), "{err:#}");
    }
}
