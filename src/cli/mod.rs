//! The command line of DESIGN §2: clap structs, the global options and their
//! `BOOTLACE_*` variables, and dispatch to one file per command.

/// `println!` for results: a closed stdout (`bootlace release list | head -1`) becomes
/// an error that ends the command quietly, not a panic.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::write_out(format_args!("{}\n", format_args!($($arg)*)))?
    };
}

mod demo;
mod deploy;
mod fleet;
mod identity;
mod key;
mod list;
mod release;
mod rollout;
mod run;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config};
use crate::error::Exit;
use crate::identity::SourceSpec;
use crate::logging::Verbosity;

/// Turns one generic machine image into any server of a fleet, at every boot.
#[derive(Debug, Parser)]
#[command(name = "bootlace", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes. Flag beats variable beats config file beats default.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Config file [default: /etc/bootlace/config.toml, if present]
    #[arg(long, global = true, env = "BOOTLACE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Store URL: s3://BUCKET/PREFIX, file:///DIR, gs://, az:// (store.url)
    #[arg(long, global = true, env = "BOOTLACE_STORE", value_name = "URL")]
    pub store: Option<String>,
    /// Where releases, reports and the lock live (deploy.state_dir)
    #[arg(long, global = true, env = "BOOTLACE_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Identity source: `imds` or `file:PATH` (identity.source)
    #[arg(long, global = true, env = "BOOTLACE_IDENTITY", value_name = "SOURCE")]
    pub identity: Option<SourceSpec>,
    /// Machine-readable JSON on stdout
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output on stderr (-vv for everything)
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Errors only on stderr
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The boot flow: identity, deploy, init, report (what the systemd unit runs)
    Run,
    /// Print this instance's identity (user-data secrets redacted)
    Identity,
    /// Dry run: identity, pointer, cache, init candidates; changes nothing
    Plan {
        /// Run the current release's playbook with --check --diff (under the lock) and
        /// list the tasks that would change
        #[arg(long)]
        check: bool,
        /// With --check: exit 5 when something would change
        #[arg(long, requires = "check")]
        exit_code: bool,
    },
    /// Deploy the pointer's release (or TAG) and make it current
    Deploy {
        /// Deploy this tag instead of the pointer's
        #[arg(long)]
        tag: Option<String>,
    },
    /// Switch `current` to the previous (or named) local release
    Rollback {
        /// The local release to switch to
        #[arg(long)]
        to: Option<String>,
    },
    /// The last run's report; the exit code is the run's
    Status {
        /// Wait for a run in progress to finish first
        #[arg(long)]
        wait: bool,
    },
    /// Operator commands: package, upload, promote, roll back
    #[command(subcommand)]
    Release(ReleaseCommand),
    /// The whole flow on a local store in a fresh temp dir
    Demo,
    /// Long-running: follow the pointer, update, health-check, roll back
    Agent {
        /// One check and, if needed, one update; exits as `run` would
        #[arg(long)]
        once: bool,
    },
    /// What runs where, from the reports in the store
    Fleet(FleetArgs),
    /// Signing keys
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Write a minisign-compatible key pair: bootlace.key (secret) and bootlace.pub.
    /// The secret key is encrypted with a password from BOOTLACE_SIGN_PASSWORD or a
    /// terminal prompt
    Generate {
        /// Where to write the two files [default: the current directory]
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Leave the secret key unencrypted (for a CI secret store that protects it)
        #[arg(long)]
        unencrypted: bool,
    },
}

/// `bootlace fleet`: one row per (environment, role, tag), or per instance.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct FleetArgs {
    #[command(subcommand)]
    pub command: Option<FleetCommand>,
    /// Only this environment's instances
    #[arg(long)]
    pub env: Option<String>,
    /// Only this role's instances
    #[arg(long)]
    pub role: Option<String>,
    /// A row per instance (machine id, context, tag, status, age, init script, version)
    #[arg(long)]
    pub instances: bool,
    /// An instance whose last report is older than this is stale
    #[arg(long, value_name = "DUR", default_value = "2h", value_parser = parse_duration)]
    pub stale: std::time::Duration,
    /// Exit 1 when any instance is failed, rolled back or stale, or a report is unreadable
    #[arg(long)]
    pub check: bool,
    /// Also write the fleet as one self-contained HTML page to FILE
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

/// Timed waves as given on the command line.
#[derive(Clone, Debug)]
pub struct Waves(pub Vec<crate::release::rollout::Wave>);

fn parse_percent(text: &str) -> Result<f64, String> {
    crate::release::rollout::parse_percent(text).map_err(|e| e.0)
}

fn parse_waves(text: &str) -> Result<Waves, String> {
    crate::release::rollout::parse_waves(text)
        .map(Waves)
        .map_err(|e| e.0)
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Stable and target tags, the percentage, and where the instances stand
    Status {
        #[arg(long)]
        env: String,
        /// A report older than this is stale
        #[arg(long, value_name = "DUR", default_value = "2h", value_parser = parse_duration)]
        stale: std::time::Duration,
    },
    /// A fixed percentage from now on; refused while too many instances failed the target
    Set {
        #[arg(long)]
        env: String,
        #[arg(long, value_parser = parse_percent, allow_negative_numbers = true)]
        percent: f64,
        /// Failed or rolled-back instances on the target tolerated before growing
        #[arg(long, default_value_t = 0)]
        max_failures: u64,
        /// Grow even with more failures than that
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Freeze the percentage where it stands
    Halt {
        #[arg(long)]
        env: String,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Unfreeze it (timed waves resume where they stood)
    Resume {
        #[arg(long)]
        env: String,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Everyone back to the stable tag
    Abort {
        #[arg(long)]
        env: String,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// The target becomes the stable tag for everyone
    Finish {
        #[arg(long)]
        env: String,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Step through percentages, baking and checking the reports at each; halts on failures
    Watch {
        #[arg(long)]
        env: String,
        /// Percentages, rising: 1,5,25,50,100
        #[arg(long, value_delimiter = ',', value_parser = parse_percent, required = true)]
        steps: Vec<f64>,
        /// How long each step runs before its reports are checked
        #[arg(long, value_name = "DUR", value_parser = parse_duration)]
        bake: std::time::Duration,
        /// Failed or rolled-back instances on the target tolerated
        #[arg(long, default_value_t = 0)]
        max_failures: u64,
        #[command(flatten)]
        sign: SignArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Delete the reports of instances that stopped reporting
    Prune {
        /// Delete reports whose last report is older than this
        #[arg(long, value_name = "DUR", value_parser = parse_duration)]
        older_than: std::time::Duration,
        /// List what would be deleted; delete nothing
        #[arg(long)]
        dry_run: bool,
        /// Allow an age below the agents' report interval (agent.report_interval), at
        /// which live instances' reports are deleted too
        #[arg(long)]
        force: bool,
        /// Only this environment's reports
        #[arg(long)]
        env: Option<String>,
        /// Only this role's reports
        #[arg(long)]
        role: Option<String>,
    },
}

/// Signing what a command writes (DESIGN §6.5).
#[derive(Clone, Debug, Args)]
pub struct SignArgs {
    /// Sign every manifest and pointer written with this minisign secret key (its
    /// password from BOOTLACE_SIGN_PASSWORD, or asked on the terminal)
    #[arg(long, env = "BOOTLACE_SIGN_KEY", value_name = "FILE")]
    pub sign_key: Option<PathBuf>,
    /// Until when a signed pointer is accepted: a duration from now (90d) or an RFC 3339
    /// time [default: 90d]
    #[arg(long, value_name = "WHEN")]
    pub expires: Option<String>,
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    crate::units::duration::parse(text)
}

#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// Package a directory (or take a .tar.zst/.tar.gz), upload it and its manifest
    Push {
        path: PathBuf,
        #[arg(long)]
        tag: String,
        /// Then move this environment's pointer to TAG
        #[arg(long)]
        env: Option<String>,
        /// Make delta packs from these tags [default: the last 3 the pointer named]
        #[arg(long, value_name = "TAG", num_args = 1..)]
        delta_from: Vec<String>,
        /// Make no delta packs
        #[arg(long, conflicts_with = "delta_from")]
        no_delta: bool,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Install bootstrap/requirements.yml's roles and collections into the tree DIR
    /// with ansible-galaxy, and write bootstrap/vendor.lock.json
    Vendor { dir: PathBuf },
    /// Add the delta pack that rebuilds TAG from a release OLD instances hold
    Delta {
        tag: String,
        /// The release the pack starts from (several: one pack each)
        #[arg(long, value_name = "OLD", num_args = 1.., required = true)]
        from: Vec<String>,
    },
    /// Move an environment's pointer to TAG, or roll TAG out to a share of it
    Promote {
        tag: String,
        #[arg(long)]
        env: String,
        /// Only this percentage of the instances (0-100) moves to TAG: a staged rollout
        #[arg(long, value_parser = parse_percent, conflicts_with = "waves", allow_negative_numbers = true)]
        percent: Option<f64>,
        /// Timed waves instead of a fixed percentage: "1@0s,10@2h,50@1d,100@2d"
        #[arg(long, value_name = "SPEC", value_parser = parse_waves)]
        waves: Option<Waves>,
        /// What shuffles the instances into buckets [default: TAG]
        #[arg(long)]
        salt: Option<String>,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// A staged rollout: its status, its percentage, halt, resume, abort, finish, watch
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Move an environment's pointer back to its previous tag (or TAG)
    Rollback {
        #[arg(long)]
        env: String,
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Sign an environment's pointer again: a new serial and expiry, the same tag
    Resign {
        #[arg(long)]
        env: String,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Tags in the store, marking what each pointer names
    List {
        #[arg(long)]
        env: Option<String>,
    },
    /// A tag's manifest
    Show { tag: String },
}

impl GlobalArgs {
    pub fn verbosity(&self) -> Verbosity {
        match (self.quiet, self.verbose) {
            (true, _) => Verbosity::Quiet,
            (false, 0) => Verbosity::Normal,
            (false, 1) => Verbosity::Verbose,
            (false, _) => Verbosity::Trace,
        }
    }

    /// The config file with flags and variables applied on top.
    pub fn settings(&self) -> anyhow::Result<Config> {
        let path = self.config.clone().unwrap_or_else(|| config::DEFAULT_PATH.into());
        let mut config = Config::load(&path, self.config.is_some()).map_err(crate::error::user_input)?;
        if let Some(url) = &self.store {
            config.store.url = Some(url.clone());
        }
        if let Some(dir) = &self.state_dir {
            config.deploy.state_dir = dir.clone();
        }
        if let Some(source) = &self.identity {
            config.identity.source = source.clone();
        }
        config.deploy.state_dir = absolute_state_dir(&config.deploy.state_dir)?;
        Ok(config)
    }
}

impl Cli {
    pub fn run(self) -> anyhow::Result<Exit> {
        let global = &self.global;
        match &self.command {
            Command::Identity => identity::run(global),
            Command::Demo => demo::run(global),
            Command::Run => run::run(global),
            Command::Plan { check: false, .. } => run::plan(global),
            Command::Plan {
                check: true,
                exit_code,
            } => run::plan_check(global, *exit_code),
            Command::Deploy { tag } => deploy::deploy(global, tag.as_deref()),
            Command::Rollback { to } => deploy::rollback(global, to.as_deref()),
            Command::Status { wait } => run::status(global, *wait),
            Command::Release(command) => release::run(global, command),
            Command::Agent { once } => run::agent(global, *once),
            Command::Fleet(args) => fleet::run(global, args),
            Command::Key(KeyCommand::Generate { dir, unencrypted }) => {
                key::generate(global, dir.as_deref(), *unencrypted)
            }
        }
    }
}

/// The state dir as an absolute path, fixed once: init scripts get paths inside it
/// and run in another directory. An empty one is refused rather than meaning the cwd.
fn absolute_state_dir(dir: &std::path::Path) -> Result<PathBuf, crate::error::BadInput> {
    use crate::error::BadInput;
    if dir.as_os_str().is_empty() {
        return Err(BadInput(
            "the state dir is empty: set deploy.state_dir, --state-dir or BOOTLACE_STATE_DIR to a directory"
                .into(),
        ));
    }
    std::path::absolute(dir).map_err(|e| BadInput(format!("state dir {}: {e}", dir.display())))
}

/// What a command that writes manifests or pointers works with (`release`, `rollout`).
struct Op<'a> {
    pub global: &'a GlobalArgs,
    pub config: &'a Config,
    pub store: &'a crate::store::Store,
    /// Who writes, and with which signing key.
    pub author: &'a crate::release::sign::Author,
}

/// A runtime for one command. Single-threaded: bootlace's network work is a handful of
/// requests, and a boot should not pay for starting worker threads.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Resolves when SIGINT or SIGTERM arrives, with the signal's name. From the first
/// call on, those signals no longer end the process by themselves.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// A byte progress bar on stderr labelled `verb`, drawn only on a terminal and without
/// `-q`; `{msg}` carries extra counts (files, for deploys).
fn progress_bar(global: &GlobalArgs, verb: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if global.quiet || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let template =
        format!("{verb} {{bar:30}} {{binary_bytes}}/{{binary_total_bytes}} {{binary_bytes_per_sec}} {{msg}}");
    let style = indicatif::ProgressStyle::with_template(&template).expect("a valid template");
    indicatif::ProgressBar::new(0).with_style(style)
}

/// Prints `value` as JSON on stdout.
fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Writes results to stdout.
pub(crate) fn write_out(args: std::fmt::Arguments) -> std::io::Result<()> {
    use std::io::Write;
    std::io::stdout().lock().write_fmt(args)
}

/// Whether the command ended because stdout was closed under it.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
