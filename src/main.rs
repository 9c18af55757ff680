//! The `bootlace` binary: parse arguments, set up logging, dispatch, map the outcome
//! to an exit code. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;

use bootlace::cli::Cli;
use bootlace::exit;
use bootlace::logging;

fn main() -> ExitCode {
    // clap prints its own usage errors and exits with 2 itself.
    let cli = Cli::parse();
    logging::init(cli.global.verbosity());
    let outcome = cli.run();
    match outcome {
        Ok(exit) => exit.into(),
        // A reader that stopped reading (`| head`) is not a failure to report.
        Err(err) if bootlace::cli::is_broken_pipe(&err) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", exit::one_line(&err));
            exit::classify(&err).into()
        }
    }
}
