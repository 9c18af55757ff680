//! Exit codes (DESIGN §2) and how an error maps to one.

use std::process::ExitCode;

use crate::config::ConfigError;
use crate::error::BadInput;
use crate::identity::userdata::UserDataError;

/// How a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Ok = 0,
    /// The work failed.
    Failed = 1,
    /// Bad usage, config or input.
    BadInput = 2,
    /// Ran the already-current release because the target could not be deployed.
    Degraded = 3,
    /// The target failed its init or health check; the last good release runs again.
    RolledBack = 4,
}

impl Exit {
    /// The exit for a code bootlace documents; `None` for any other number.
    pub fn from_code(code: u8) -> Option<Exit> {
        [
            Exit::Ok,
            Exit::Failed,
            Exit::BadInput,
            Exit::Degraded,
            Exit::RolledBack,
        ]
        .into_iter()
        .find(|exit| *exit as u8 == code)
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// The exit code for an error: 2 when anything in its chain is the user's input,
/// 1 otherwise.
pub fn classify(err: &anyhow::Error) -> Exit {
    let bad_input = err
        .chain()
        .any(|e| e.is::<BadInput>() || e.is::<ConfigError>() || e.is::<UserDataError>());
    if bad_input { Exit::BadInput } else { Exit::Failed }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn bad_input_anywhere_in_the_chain_is_exit_2() {
        let err = Err::<(), _>(BadInput("no such thing".into()))
            .context("reading config")
            .unwrap_err();
        assert_eq!(classify(&err), Exit::BadInput);
        assert_eq!(classify(&anyhow::anyhow!("boom")), Exit::Failed);
    }
}
