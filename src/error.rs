//! The error kinds shared across bootlace, how a command ended (its exit code) and
//! how an error is shown on one line. The ground floor: imports nothing of the crate
//! but [`crate::text`].

use std::process::ExitCode;

/// A problem with what the user gave bootlace (a flag, an environment variable, a
/// file) that has no more specific type.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// A module's own kind of error that is the user's fault (user-data refused, a config
/// value out of range): shown exactly as the error it wraps, causes included, and
/// counted as bad input. Wrap at the boundary with [`user_input`].
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct UserInput(Box<dyn std::error::Error + Send + Sync + 'static>);

/// Marks `err` as the user's input (see [`UserInput`]).
pub fn user_input(err: impl std::error::Error + Send + Sync + 'static) -> UserInput {
    UserInput(Box::new(err))
}

/// How a command ended (DESIGN §2). The run flow records it in its report; `main`
/// exits with it.
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
    /// `plan --check --exit-code`: the host has drifted from what its playbook sets.
    Drift = 5,
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
            Exit::Drift,
        ]
        .into_iter()
        .find(|exit| *exit as u8 == code)
    }

    /// The exit for an error: 2 when anything in its chain is the user's input
    /// ([`BadInput`], [`UserInput`]), 1 otherwise.
    pub fn of(err: &anyhow::Error) -> Exit {
        let bad_input = err.chain().any(|e| e.is::<BadInput>() || e.is::<UserInput>());
        if bad_input { Exit::BadInput } else { Exit::Failed }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// The error and its causes on one line, as `error: …` promises.
pub fn one_line(err: &anyhow::Error) -> String {
    let text = format!("{err:#}");
    // Errors quote what was read from outside (a key, a store's answer): whatever
    // control characters remain become spaces, so no error repaints a terminal.
    text.split(['\n', '\r'])
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| crate::text::printable(part, 4096))
        .collect::<Vec<_>>()
        .join("; ")
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
        assert_eq!(Exit::of(&err), Exit::BadInput);
        assert_eq!(Exit::of(&anyhow::anyhow!("boom")), Exit::Failed);
    }

    #[test]
    fn user_input_is_exit_2_and_reads_as_the_error_it_wraps() {
        let inner = std::io::Error::other("line 3: no value");
        let err = Err::<(), _>(user_input(inner))
            .context("parsing user-data")
            .unwrap_err();
        assert_eq!(Exit::of(&err), Exit::BadInput);
        assert_eq!(one_line(&err), "parsing user-data: line 3: no value");
    }

    #[test]
    fn one_line_joins_multiline_messages() {
        let err = anyhow::anyhow!("first\nsecond\n").context("doing it");
        assert_eq!(one_line(&err), "doing it: first; second");
    }
}
