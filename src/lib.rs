//! bootlace turns one generic machine image into any server of a fleet, at every boot:
//! it learns who the instance is, deploys the build its environment's pointer names,
//! runs exactly one init script and records what it did. The same binary is the
//! operator's release tool.
//!
//! Modules, one concern each:
//! - [`run`]: the flow — identity, target, fetch, switch, init, health, commit or roll
//!   back, report — for the boot run and the agent alike;
//! - [`agent`]: the long-running agent — check the pointer, update, report;
//! - [`health`]: health checks after init (a command or a URL);
//! - [`identity`]: who this instance is, from IMDS or a file, and the user-data parser;
//! - [`deploy`]: fetch, verify, unpack, activate and prune releases on the instance;
//! - [`init`]: choosing and running the one init script;
//! - [`report`]: the run report and where it is kept;
//! - [`fleet`]: what runs where, from the reports in the store, as a table or a page;
//! - [`release`]: the operator's side — push, manifests, pointers and their staged
//!   rollouts;
//! - [`keys`]: minisign-compatible signing keys;
//! - [`archive`]: deterministic packaging and the unpack policy;
//! - [`store`]: bootlace's layout over any object store;
//! - [`cli`]: the command line (one file per command) and its dispatch;
//! - [`config`]: the TOML config file, merged with flags and environment variables;
//! - [`retry`]: backoff with jitter until a deadline, for the IMDS client;
//! - [`error`]: the shared error kinds, exit codes and errors on one line;
//! - [`logging`]: `tracing` to stderr;
//! - [`text`]: text from outside made safe to print;
//! - `fuzz`: the fuzz targets, one per parser of untrusted input (`fuzz/`).

pub mod agent;
pub mod archive;
pub mod cli;
pub mod config;
pub mod deploy;
pub mod error;
pub mod files;
pub mod fleet;
#[doc(hidden)]
pub mod fuzz;
pub mod health;
pub mod identity;
pub mod init;
pub mod keys;
pub mod logging;
pub mod process;
pub mod release;
pub mod report;
pub mod retry;
pub mod run;
pub mod secrets;
pub mod store;
pub mod text;
pub mod tls;
pub mod trust;
pub mod units;
