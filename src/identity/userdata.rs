//! The user-data parser (DESIGN §3): `key=value` lines, `#` comments, blank lines, gzip
//! accepted, 16 KiB at most. The values that end up in paths are checked here, once, and
//! the legacy `aws_*` keys become [`Credentials`], a type that cannot be printed,
//! logged or serialised.

use std::collections::BTreeMap;
use std::io::Read;

use secrecy::SecretString;

/// EC2's own limit on user-data.
pub const MAX_BYTES: usize = 16 * 1024;
/// How far gzip'd user-data may expand; key=value lines never need more.
pub const MAX_EXPANDED_BYTES: usize = 64 * 1024;

/// Keys whose values become parts of paths.
pub const NAME_KEYS: [&str; 4] = ["environment", "role", "context", "machine_id"];
const ACCESS_KEY_ID: &str = "aws_access_key_id";
const SECRET_ACCESS_KEY: &str = "aws_secret_access_key";
const SESSION_TOKEN: &str = "aws_session_token";
/// The seed's legacy way to pass store credentials; never shown anywhere.
pub const SECRET_KEYS: [&str; 3] = [ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN];

const MAX_NAME_LEN: usize = 128;
const MAX_KEY_LEN: usize = 64;

/// Why user-data was refused. Messages name the line and key, never a secret value.
#[derive(Debug, thiserror::Error)]
pub enum UserDataError {
    #[error("user-data is {size} bytes; at most {MAX_BYTES} are allowed (EC2's limit)")]
    TooLarge { size: usize },
    #[error("gzip'd user-data expands beyond {MAX_EXPANDED_BYTES} bytes")]
    TooLargeExpanded,
    #[error("user-data looks like gzip but does not decompress: {0}")]
    BadGzip(std::io::Error),
    #[error("line {line}: user-data is binary (a NUL byte); expected key=value text")]
    Binary { line: usize },
    #[error("line {line}: user-data is not UTF-8 text")]
    NotUtf8 { line: usize },
    #[error("line {line}: expected key=value")]
    NotKeyValue { line: usize },
    // The text before `=` is not echoed: on a broken line it may be part of a secret.
    #[error("line {line}: invalid key; keys match [a-z][a-z0-9_]* (at most {MAX_KEY_LEN} characters)")]
    BadKey { line: usize },
    #[error("line {line}: key `{key}` given twice (first on line {first})")]
    Duplicate { line: usize, key: String, first: usize },
    #[error("line {line}: {key} {value} is not a valid name: {why}")]
    BadName {
        line: usize,
        key: String,
        value: Shown,
        why: &'static str,
    },
    #[error("line {line}: the value of `{key}` contains a control character")]
    ControlCharacter { line: usize, key: String },
    // AWS keys and tokens are printable ASCII; a signed request carries them in headers.
    #[error("line {line}: the value of `{key}` is not printable ASCII")]
    NotAscii { line: usize, key: &'static str },
    #[error("`{given}` is given without `{missing}`; store credentials need both")]
    HalfCredentials {
        given: &'static str,
        missing: &'static str,
    },
    #[error("required key(s) missing: {}", .keys.join(", "))]
    Missing { keys: Vec<String> },
}

/// Store credentials passed in user-data. Deliberately neither `Display` nor
/// `Serialize`; `Debug` prints only redaction markers.
#[derive(Debug)]
pub struct Credentials {
    pub access_key_id: SecretString,
    pub secret_access_key: SecretString,
    pub session_token: Option<SecretString>,
}

/// Parsed user-data: every non-secret key, and the credentials if any.
#[derive(Debug, Default)]
pub struct UserData {
    values: BTreeMap<String, String>,
    pub credentials: Option<Credentials>,
}

impl UserData {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// Takes a value out, so that what is left are the extras.
    pub fn take(&mut self, key: &str) -> Option<String> {
        self.values.remove(key)
    }

    /// The non-secret keys still held.
    pub fn into_values(self) -> BTreeMap<String, String> {
        self.values
    }

    /// Fails naming every key of `required` that is absent.
    pub fn require(&self, required: &[String]) -> Result<(), UserDataError> {
        let keys: Vec<String> = required
            .iter()
            .filter(|key| !self.values.contains_key(*key) && !SECRET_KEYS.contains(&key.as_str()))
            .cloned()
            .collect();
        if keys.is_empty() {
            Ok(())
        } else {
            Err(UserDataError::Missing { keys })
        }
    }
}

/// Parses user-data as delivered (plain or gzip'd bytes).
pub fn parse(raw: &[u8]) -> Result<UserData, UserDataError> {
    if raw.len() > MAX_BYTES {
        return Err(UserDataError::TooLarge { size: raw.len() });
    }
    let bytes = gunzip_if_gzip(raw)?;
    let text = as_text(&bytes)?;
    let mut data = UserData::default();
    let mut first_seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut secrets: BTreeMap<&str, SecretString> = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or(UserDataError::NotKeyValue { line: number })?;
        let (key, value) = (key.trim(), value.trim());
        if !is_valid_key(key) {
            return Err(UserDataError::BadKey { line: number });
        }
        if let Some(&first) = first_seen.get(key) {
            let key = key.to_owned();
            return Err(UserDataError::Duplicate {
                line: number,
                key,
                first,
            });
        }
        first_seen.insert(key, number);
        if value.chars().any(char::is_control) {
            let key = key.to_owned();
            return Err(UserDataError::ControlCharacter { line: number, key });
        }
        if let Some(&secret_key) = SECRET_KEYS.iter().find(|k| **k == key) {
            if !crate::text::is_header_token(value) {
                return Err(UserDataError::NotAscii {
                    line: number,
                    key: secret_key,
                });
            }
            secrets.insert(secret_key, SecretString::from(value));
            continue;
        }
        if NAME_KEYS.contains(&key) {
            check_name(value).map_err(|why| UserDataError::BadName {
                line: number,
                key: key.to_owned(),
                value: Shown::new(value),
                why,
            })?;
        }
        data.values.insert(key.to_owned(), value.to_owned());
    }
    data.credentials = credentials(secrets)?;
    Ok(data)
}

/// `[a-z][a-z0-9_]*`, the user-data key rule.
pub fn is_valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    key.len() <= MAX_KEY_LEN
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// `[A-Za-z0-9][A-Za-z0-9._-]*` without `..`: safe as one path component.
pub fn check_name(value: &str) -> Result<(), &'static str> {
    let first_ok = value.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if value.is_empty() {
        Err("it is empty")
    } else if value.len() > MAX_NAME_LEN {
        Err("it is longer than 128 characters")
    } else if value.contains('/') || value.contains("..") {
        Err("it must not contain `/` or `..`")
    } else if !first_ok {
        Err("it must start with a letter or digit")
    } else if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        Err("only letters, digits, `.`, `_` and `-` are allowed")
    } else {
        Ok(())
    }
}

fn gunzip_if_gzip(raw: &[u8]) -> Result<Vec<u8>, UserDataError> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw.to_vec());
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(raw)
        .take(MAX_EXPANDED_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(UserDataError::BadGzip)?;
    if out.len() > MAX_EXPANDED_BYTES {
        return Err(UserDataError::TooLargeExpanded);
    }
    Ok(out)
}

fn as_text(bytes: &[u8]) -> Result<&str, UserDataError> {
    let line_at = |offset: usize| bytes[..offset].iter().filter(|&&b| b == b'\n').count() + 1;
    if let Some(offset) = bytes.iter().position(|&b| b == 0) {
        return Err(UserDataError::Binary {
            line: line_at(offset),
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| UserDataError::NotUtf8 {
        line: line_at(e.valid_up_to()),
    })?;
    Ok(text.strip_prefix('\u{feff}').unwrap_or(text))
}

fn credentials(mut secrets: BTreeMap<&str, SecretString>) -> Result<Option<Credentials>, UserDataError> {
    let session_token = secrets.remove(SESSION_TOKEN);
    match (secrets.remove(ACCESS_KEY_ID), secrets.remove(SECRET_ACCESS_KEY)) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(Some(Credentials {
            access_key_id,
            secret_access_key,
            session_token,
        })),
        (Some(_), None) => Err(UserDataError::HalfCredentials {
            given: ACCESS_KEY_ID,
            missing: SECRET_ACCESS_KEY,
        }),
        (None, Some(_)) => Err(UserDataError::HalfCredentials {
            given: SECRET_ACCESS_KEY,
            missing: ACCESS_KEY_ID,
        }),
        (None, None) if session_token.is_some() => Err(UserDataError::HalfCredentials {
            given: SESSION_TOKEN,
            missing: ACCESS_KEY_ID,
        }),
        (None, None) => Ok(None),
    }
}

/// Text from the input, quoted, escaped and shortened for an error message.
#[derive(Debug)]
pub struct Shown(String);

impl Shown {
    fn new(text: &str) -> Self {
        const MAX: usize = 40;
        let short: String = text.chars().take(MAX).collect();
        let ellipsis = if text.chars().count() > MAX { "…" } else { "" };
        Self(format!("\"{}{ellipsis}\"", short.escape_debug()))
    }
}

impl std::fmt::Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::io::Write;

    const SEED: &str = "environment=prod\nrole=memcached\ncontext=b\n";

    #[test]
    fn parses_the_seeds_user_data() {
        let data = parse(SEED.as_bytes()).unwrap();
        assert_eq!(data.get("environment"), Some("prod"));
        assert_eq!(data.get("role"), Some("memcached"));
        assert_eq!(data.get("context"), Some("b"));
        assert!(data.credentials.is_none());
    }

    #[test]
    fn comments_blank_lines_crlf_spaces_and_bom_are_fine() {
        let text = "\u{feff}# launch data\r\n\r\n  environment = prod \r\nrole=web\n\tcontext=a\nnote=x=y\n";
        let data = parse(text.as_bytes()).unwrap();
        assert_eq!(data.get("environment"), Some("prod"));
        assert_eq!(data.get("context"), Some("a"));
        assert_eq!(data.get("note"), Some("x=y"));
    }

    #[test]
    fn gzip_is_accepted() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(SEED.as_bytes()).unwrap();
        let data = parse(&gz.finish().unwrap()).unwrap();
        assert_eq!(data.get("role"), Some("memcached"));
    }

    #[test]
    fn gzip_bomb_is_refused() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![b'#'; 1 << 20]).unwrap();
        let raw = gz.finish().unwrap();
        assert!(raw.len() <= MAX_BYTES);
        assert!(matches!(parse(&raw), Err(UserDataError::TooLargeExpanded)));
    }

    #[test]
    fn broken_gzip_is_refused() {
        assert!(matches!(
            parse(&[0x1f, 0x8b, 8, 0, 1, 2]),
            Err(UserDataError::BadGzip(_))
        ));
    }

    #[test]
    fn oversized_is_refused() {
        let raw = vec![b'#'; MAX_BYTES + 1];
        assert!(matches!(parse(&raw), Err(UserDataError::TooLarge { size }) if size == MAX_BYTES + 1));
        assert!(parse(&vec![b'#'; MAX_BYTES]).is_ok());
    }

    #[test]
    fn binary_and_non_utf8_name_the_line() {
        let err = parse(b"environment=prod\nrole=\x00\x01").unwrap_err();
        assert!(matches!(err, UserDataError::Binary { line: 2 }), "{err}");
        let err = parse(b"environment=prod\n\nrole=\xff\xfe").unwrap_err();
        assert!(matches!(err, UserDataError::NotUtf8 { line: 3 }), "{err}");
    }

    #[test]
    fn path_like_context_is_refused_with_its_line() {
        let err = parse(b"environment=prod\nrole=web\ncontext=../../etc\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("line 3: context"), "{text}");
        assert!(text.contains("../../etc"), "{text}");
    }

    #[test]
    fn name_rule() {
        for good in ["prod", "b", "i-0abc123", "v1.2_x-y", "A9"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".hidden",
            "-x",
            "a/b",
            "a..b",
            "..",
            "a b",
            "é",
            "a\\b",
            &"x".repeat(129),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_rule_names_the_line() {
        for line in ["Environment=prod", "1x=2", "a-b=c", "=value", "ключ=1"] {
            let err = parse(format!("role=web\n{line}\n").as_bytes()).unwrap_err();
            assert!(
                matches!(err, UserDataError::BadKey { line: 2, .. }),
                "{line}: {err}"
            );
        }
    }

    #[test]
    fn lines_without_equals_are_refused_without_echoing_them() {
        let err = parse(b"role=web\nAKIASECRETLOOKING\n").unwrap_err();
        assert!(matches!(err, UserDataError::NotKeyValue { line: 2 }));
        assert!(!err.to_string().contains("AKIA"));
    }

    #[test]
    fn duplicates_are_refused() {
        let err = parse(b"role=web\nrole=db\n").unwrap_err();
        assert!(
            matches!(
                err,
                UserDataError::Duplicate {
                    line: 2,
                    first: 1,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn control_characters_in_values_are_refused() {
        let err = parse(b"note=a\x1b[31mred\n").unwrap_err();
        assert!(
            matches!(err, UserDataError::ControlCharacter { line: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn aws_keys_that_are_not_printable_ascii_are_refused_without_their_value() {
        for (text, key) in [
            (
                "aws_access_key_id=AKIA\u{e9}\naws_secret_access_key=s\n",
                "aws_access_key_id",
            ),
            (
                "aws_access_key_id=AKIA\naws_secret_access_key=s3cr\u{a0}t\n",
                "aws_secret_access_key",
            ),
            (
                "aws_access_key_id=AKIA\naws_secret_access_key=s\naws_session_token=t\u{f6}k\n",
                "aws_session_token",
            ),
        ] {
            let err = parse(text.as_bytes()).unwrap_err();
            assert!(
                matches!(err, UserDataError::NotAscii { key: k, .. } if k == key),
                "{err}"
            );
            assert!(
                !err.to_string().contains('\u{e9}') && !err.to_string().contains("s3cr"),
                "{err}"
            );
        }
    }

    #[test]
    fn credentials_are_taken_out_and_never_shown() {
        let text = "role=web\naws_access_key_id=AKIAEXAMPLEKEYID\naws_secret_access_key=s3cr3tV4lue\naws_session_token=T0k3n\n";
        let data = parse(text.as_bytes()).unwrap();
        let creds = data.credentials.as_ref().unwrap();
        assert_eq!(creds.secret_access_key.expose_secret(), "s3cr3tV4lue");
        assert_eq!(data.get("aws_secret_access_key"), None);
        let debug = format!("{data:?}");
        for secret in ["AKIAEXAMPLEKEYID", "s3cr3tV4lue", "T0k3n"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        assert!(!data.into_values().contains_key("aws_access_key_id"));
    }

    #[test]
    fn bad_secret_values_are_refused_without_echoing_them() {
        let err = parse(b"aws_access_key_id=AKIAX\naws_secret_access_key=abc\x07def\n").unwrap_err();
        assert!(!format!("{err} {err:?}").contains("abc"), "{err}");
    }

    #[test]
    fn half_credentials_are_refused() {
        let err = parse(b"aws_access_key_id=AKIAEXAMPLE\n").unwrap_err();
        assert!(matches!(err, UserDataError::HalfCredentials { .. }));
        assert!(!err.to_string().contains("AKIAEXAMPLE"));
        // Names the key that was given as given, and the other as missing.
        assert_eq!(
            err.to_string(),
            "`aws_access_key_id` is given without `aws_secret_access_key`; store credentials need both"
        );
    }

    #[test]
    fn require_names_every_missing_key() {
        let data = parse(b"role=web\n").unwrap();
        let required = ["environment", "role", "context"].map(String::from);
        let err = data.require(&required).unwrap_err();
        assert_eq!(err.to_string(), "required key(s) missing: environment, context");
    }

    #[test]
    fn shown_escapes_and_shortens() {
        assert_eq!(Shown::new("a\"b\n").to_string(), "\"a\\\"b\\n\"");
        assert!(Shown::new(&"x".repeat(100)).to_string().ends_with("…\""));
    }
}
