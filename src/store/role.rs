//! The instance role's keys, read through bootlace's own IMDS client (session token,
//! retries, caps) rather than `object_store`'s, which puts the metadata service's token
//! and role name into headers and URLs unchecked and panics on one that cannot be.
//! The role name, the JSON and the keys are checked before any is used, and a set is
//! kept until five minutes before the expiry it states (at most an hour).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use object_store::CredentialProvider;
use object_store::aws::AwsCredential;
use serde::Deserialize;

use crate::identity::imds::ImdsClient;
use crate::identity::imds::endpoint::ImdsSettings;

const ROLES: &str = "meta-data/iam/security-credentials/";
/// How long one fetch may take, retries included.
const FETCH_DEADLINE: Duration = Duration::from_secs(20);
/// Keys are fetched again this long before they expire.
const RENEW_MARGIN: Duration = Duration::from_secs(300);
const MAX_KEEP: Duration = Duration::from_secs(3600);

#[derive(Debug)]
pub struct RoleCredentials {
    settings: ImdsSettings,
    kept: tokio::sync::Mutex<Option<(Arc<AwsCredential>, Instant)>>,
}

impl RoleCredentials {
    pub fn new(settings: ImdsSettings) -> Self {
        Self {
            settings,
            kept: tokio::sync::Mutex::new(None),
        }
    }

    async fn fetch(&self) -> Result<(AwsCredential, Duration), String> {
        let deadline = Instant::now() + FETCH_DEADLINE;
        let mut client = ImdsClient::new(self.settings.endpoint.clone(), self.settings.v1_allowed, deadline)
            .map_err(|e| e.to_string())?;
        let roles = client
            .get(ROLES)
            .await
            .map_err(|e| format!("reading {ROLES}: {e}"))?
            .ok_or("the instance has no role (IMDS has no security credentials)")?;
        let role = String::from_utf8_lossy(&roles)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_owned();
        if !is_role_name(&role) {
            return Err("IMDS names no valid instance role".into());
        }
        let path = format!("{ROLES}{role}");
        let answer = client
            .get(&path)
            .await
            .map_err(|e| format!("reading {path}: {e}"))?
            .ok_or_else(|| format!("IMDS has no {path}"))?;
        let keys: Keys = serde_json::from_slice(&answer)
            .map_err(|_| format!("{path}: not the credentials JSON IMDS answers"))?;
        let credential = AwsCredential {
            key_id: keys.access_key_id,
            secret_key: keys.secret_access_key,
            token: Some(keys.token),
        };
        if !header_safe(&credential) {
            return Err(format!(
                "{path}: the key id or session token is not printable ASCII"
            ));
        }
        let left = humantime::parse_rfc3339(&keys.expiration)
            .ok()
            .and_then(|at| at.duration_since(SystemTime::now()).ok())
            .unwrap_or_default();
        Ok((credential, left.saturating_sub(RENEW_MARGIN).min(MAX_KEEP)))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Keys {
    access_key_id: String,
    secret_access_key: String,
    token: String,
    expiration: String,
}

/// Whether a signer can put `credential`'s key id and session token in headers.
pub fn header_safe(credential: &AwsCredential) -> bool {
    use crate::text::is_header_token;
    is_header_token(&credential.key_id) && credential.token.as_deref().is_none_or(is_header_token)
}

/// IAM's rule for role names: 1 to 64 of `[A-Za-z0-9+=,.@_-]`.
fn is_role_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
}

#[async_trait]
impl CredentialProvider for RoleCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let mut kept = self.kept.lock().await;
        if let Some((credential, until)) = &*kept
            && Instant::now() < *until
        {
            return Ok(credential.clone());
        }
        let (credential, keep) = self.fetch().await.map_err(|why| object_store::Error::Generic {
            store: "S3",
            source: format!("the instance role's credentials: {why}").into(),
        })?;
        let credential = Arc::new(credential);
        *kept = Some((credential.clone(), Instant::now() + keep));
        Ok(credential)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_follow_iam() {
        assert!(is_role_name("bootlace-test-role"));
        assert!(is_role_name("a+b=c,d.e@f_g-h"));
        for bad in ["", "a b", "a/b", "a\nb", "r\u{f6}le", &"x".repeat(65)] {
            assert!(!is_role_name(bad), "{bad:?}");
        }
    }
}
