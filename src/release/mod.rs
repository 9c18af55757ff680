//! The operator's side (DESIGN §2, §4): push a build, move pointers, list and show
//! releases. The archive and manifest are complete before any pointer names them; the
//! pointer is the single commit point.

pub mod delta;
pub mod manifest;
pub mod moves;
pub mod pointer;
pub mod push;
pub mod rollout;
pub mod sign;
pub mod signature;

use crate::error::BadInput;

pub use manifest::Manifest;
pub use moves::{Moved, move_pointer};
pub use pointer::Pointer;

/// Checks a tag: `[A-Za-z0-9][A-Za-z0-9._-]{0,127}`.
pub fn check_tag(tag: &str) -> Result<(), BadInput> {
    let mut chars = tag.chars();
    let valid = tag.len() <= 128
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(BadInput(format!(
            "tag {tag:?} must match [A-Za-z0-9][A-Za-z0-9._-]{{0,127}}"
        )))
    }
}

/// Checks a sha256 digest as bootlace writes it: 64 lowercase hex digits.
pub fn check_sha256(digest: &str) -> Result<(), String> {
    let valid = digest.len() == 64 && digest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if valid {
        Ok(())
    } else {
        Err(format!("sha256 {digest:?} is not 64 lowercase hex digits"))
    }
}

/// The pointer name for environment `env` under the `deploy.pointer` template.
pub fn pointer_name(template: &str, env: &str) -> Result<String, BadInput> {
    crate::identity::userdata::check_name(env)
        .map_err(|why| BadInput(format!("environment {env:?} is not a valid name: {why}")))?;
    let name = template.replace("{environment}", env);
    if name.contains('{') || name.contains('}') {
        return Err(BadInput(format!(
            "deploy.pointer = {template:?} names more than {{environment}}, which is all --env gives"
        )));
    }
    crate::identity::userdata::check_name(&name)
        .map_err(|why| BadInput(format!("pointer name {name:?} is not a valid name: {why}")))?;
    Ok(name)
}

/// The pointer name an instance follows: `deploy.pointer` filled from its identity.
pub fn pointer_name_for(template: &str, identity: &crate::identity::Identity) -> Result<String, BadInput> {
    let name = identity.fill(template, "deploy.pointer")?;
    crate::identity::userdata::check_name(&name)
        .map_err(|why| BadInput(format!("pointer name {name:?} is not a valid name: {why}")))?;
    Ok(name)
}

/// Now, as RFC 3339 UTC to the second.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(clock()).to_string()
}

/// The time rollouts are judged by: the system clock, or `BOOTLACE_NOW` (an RFC 3339
/// time) when set — a test hook, so that timed waves can be tested without waiting.
pub fn clock() -> std::time::SystemTime {
    std::env::var("BOOTLACE_NOW")
        .ok()
        .and_then(|text| humantime::parse_rfc3339_weak(&text).ok())
        .unwrap_or_else(std::time::SystemTime::now)
}

/// `user@host`, for `created_by` and `updated_by`.
pub fn who() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    format!("{user}@{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_rule() {
        for good in ["v1", "2026.11.25-1", "A", "a..b", &"x".repeat(128)] {
            assert!(check_tag(good).is_ok(), "{good}");
        }
        for bad in ["", ".v1", "-v1", "v/1", "v 1", "..", &"x".repeat(129)] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pointer_names() {
        assert_eq!(pointer_name("{environment}", "prod").unwrap(), "prod");
        assert_eq!(pointer_name("app-{environment}", "prod").unwrap(), "app-prod");
        assert!(pointer_name("{environment}-{role}", "prod").is_err());
        assert!(pointer_name("{environment}", "../x").is_err());
    }
}
