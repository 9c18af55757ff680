//! Logs go through `tracing` to stderr. On a terminal they carry colour and time; under
//! systemd (stderr not a terminal) they are plain, since the journal adds its own.

use std::io::IsTerminal;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    /// `-q`: errors only.
    Quiet,
    Normal,
    /// `-v`: bootlace's debug messages.
    Verbose,
    /// `-vv` and more: everything, including the HTTP libraries.
    Trace,
}

pub fn init(verbosity: Verbosity) {
    let (ours, theirs) = match verbosity {
        Verbosity::Quiet => (LevelFilter::ERROR, LevelFilter::ERROR),
        Verbosity::Normal => (LevelFilter::INFO, LevelFilter::WARN),
        Verbosity::Verbose => (LevelFilter::DEBUG, LevelFilter::WARN),
        Verbosity::Trace => (LevelFilter::TRACE, LevelFilter::TRACE),
    };
    let filter = Targets::new().with_target("bootlace", ours).with_default(theirs);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter);
    if std::io::stderr().is_terminal() {
        registry.with(fmt).init();
    } else {
        registry.with(fmt.with_ansi(false).without_time()).init();
    }
}
