//! The error kinds shared across bootlace, and how an error is shown on one line.
//! The ground floor: imports nothing of the crate but [`crate::text`].

/// A problem with what the user gave bootlace (a flag, an environment variable, a
/// file) that has no more specific type.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

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

    #[test]
    fn one_line_joins_multiline_messages() {
        let err = anyhow::anyhow!("first\nsecond\n").context("doing it");
        assert_eq!(one_line(&err), "doing it: first; second");
    }
}
