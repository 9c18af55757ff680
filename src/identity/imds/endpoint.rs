//! Which IMDS to talk to, and whether to talk to it at all, from the variables the AWS
//! SDKs read.

use crate::error::BadInput;

pub const ENDPOINT_VAR: &str = "AWS_EC2_METADATA_SERVICE_ENDPOINT";
pub const MODE_VAR: &str = "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE";
pub const DISABLED_VAR: &str = "AWS_EC2_METADATA_DISABLED";
pub const V1_DISABLED_VAR: &str = "AWS_EC2_METADATA_V1_DISABLED";

const IPV4_ENDPOINT: &str = "http://169.254.169.254";
const IPV6_ENDPOINT: &str = "http://[fd00:ec2::254]";

/// How bootlace may use IMDS, as the environment says.
#[derive(Debug, PartialEq, Eq)]
pub struct ImdsSettings {
    /// Base URL without a trailing slash.
    pub endpoint: String,
    pub v1_allowed: bool,
}

/// Reads the settings through `var` (`std::env::var` in production).
pub fn settings(v1_fallback: bool, var: impl Fn(&str) -> Option<String>) -> Result<ImdsSettings, BadInput> {
    let is_true = |name: &str| var(name).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    if is_true(DISABLED_VAR) {
        return Err(BadInput(format!(
            "the identity source is imds, but IMDS is disabled by {DISABLED_VAR}=true"
        )));
    }
    let endpoint = match var(ENDPOINT_VAR).filter(|v| !v.trim().is_empty()) {
        Some(url) => checked_url(url.trim())?,
        None => match var(MODE_VAR).as_deref().map(str::trim) {
            None | Some("") => IPV4_ENDPOINT.to_owned(),
            Some(mode) if mode.eq_ignore_ascii_case("ipv4") => IPV4_ENDPOINT.to_owned(),
            Some(mode) if mode.eq_ignore_ascii_case("ipv6") => IPV6_ENDPOINT.to_owned(),
            Some(mode) => {
                return Err(BadInput(format!("{MODE_VAR}={mode:?}: expected IPv4 or IPv6")));
            }
        },
    };
    Ok(ImdsSettings {
        endpoint,
        v1_allowed: v1_fallback && !is_true(V1_DISABLED_VAR),
    })
}

fn checked_url(url: &str) -> Result<String, BadInput> {
    let parsed = reqwest::Url::parse(url).map_err(|e| BadInput(format!("{ENDPOINT_VAR}={url:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(BadInput(format!(
            "{ENDPOINT_VAR}={url:?}: expected an http:// or https:// URL"
        )));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(vars: &[(&str, &str)], v1_fallback: bool) -> Result<ImdsSettings, BadInput> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        settings(v1_fallback, |name| map.get(name).cloned())
    }

    #[test]
    fn default_is_the_ipv4_link_local_endpoint_v2_only() {
        let s = with(&[], false).unwrap();
        assert_eq!(s.endpoint, IPV4_ENDPOINT);
        assert!(!s.v1_allowed);
    }

    #[test]
    fn ipv6_mode_picks_the_ipv6_endpoint() {
        assert_eq!(
            with(&[(MODE_VAR, "IPv6")], false).unwrap().endpoint,
            IPV6_ENDPOINT
        );
        assert_eq!(
            with(&[(MODE_VAR, "ipv4")], false).unwrap().endpoint,
            IPV4_ENDPOINT
        );
        assert!(with(&[(MODE_VAR, "IPv5")], false).is_err());
    }

    #[test]
    fn explicit_endpoint_wins_over_mode() {
        let s = with(
            &[(ENDPOINT_VAR, "http://127.0.0.1:8111/"), (MODE_VAR, "IPv6")],
            false,
        )
        .unwrap();
        assert_eq!(s.endpoint, "http://127.0.0.1:8111");
        assert!(with(&[(ENDPOINT_VAR, "127.0.0.1:8111")], false).is_err());
        assert!(with(&[(ENDPOINT_VAR, "ftp://127.0.0.1")], false).is_err());
    }

    #[test]
    fn disabled_refuses() {
        let err = with(&[(DISABLED_VAR, "TRUE")], false).unwrap_err();
        assert!(err.0.contains(DISABLED_VAR));
        assert!(with(&[(DISABLED_VAR, "false")], false).is_ok());
    }

    #[test]
    fn v1_needs_the_config_and_not_the_veto() {
        assert!(with(&[], true).unwrap().v1_allowed);
        assert!(!with(&[(V1_DISABLED_VAR, "true")], true).unwrap().v1_allowed);
        assert!(!with(&[], false).unwrap().v1_allowed);
    }
}
