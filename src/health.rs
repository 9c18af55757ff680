//! Health checks (DESIGN §6.2): after a release's init, a command (`sh -c` in the
//! release with the init environment; exit 0 = healthy) or a URL (any 2xx = healthy),
//! tried up to `health.tries` times, `health.interval` apart, each try bounded by
//! `health.timeout`. Without either, a release is healthy when its init succeeded.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::units::Invalid;

/// How a release is judged healthy after its init (DESIGN §6.2). Without a command or
/// URL, a release is healthy when its init succeeded.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `sh -c` in the release dir with the init environment; exit 0 = healthy.
    pub command: String,
    /// Or: GET; any 2xx = healthy.
    pub url: String,
    /// One try.
    #[serde(with = "crate::units::duration")]
    pub timeout: Duration,
    pub tries: u32,
    /// Between tries.
    #[serde(with = "crate::units::duration")]
    pub interval: Duration,
    /// A failed init or health check switches back to the last good release.
    pub rollback: bool,
}

impl Config {
    /// The values a health check cannot work with.
    pub fn check(&self) -> Result<(), Invalid> {
        if !self.command.is_empty() && !self.url.is_empty() {
            return Err(Invalid::new("health", "set command or url, not both"));
        }
        if self.tries == 0 {
            return Err(Invalid::new("health.tries", "at least 1"));
        }
        if !self.url.is_empty() {
            match reqwest::Url::parse(&self.url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => {}
                Ok(url) => {
                    let why = format!("a health check GETs http:// or https://, not {}://", url.scheme());
                    return Err(Invalid::new("health.url", why));
                }
                Err(_) => return Err(Invalid::new("health.url", "not a URL")),
            }
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            command: String::new(),
            url: String::new(),
            timeout: Duration::from_secs(10),
            tries: 6,
            interval: Duration::from_secs(5),
            rollback: true,
        }
    }
}
use crate::report::Health;

/// Bytes of a URL answer's body kept for the report.
const BODY_TAIL: usize = 1 << 10;

/// Checks the release in `release`; `None` when no check is configured.
/// `forward_signals`: as for init scripts ([`crate::process::execute`]).
pub async fn check(
    config: &Config,
    release: &Path,
    env: &BTreeMap<String, String>,
    forward_signals: bool,
) -> Option<Health> {
    let probe = match (config.command.is_empty(), config.url.is_empty()) {
        (true, true) => return None,
        (false, _) => Probe::Command(&config.command),
        (true, false) => Probe::Url(&config.url),
    };
    let started = Instant::now();
    // A boot run told to stop ends the checks, between tries as during one: the release
    // is then neither healthy nor failed, and stays uncommitted for recovery.
    let signals = crate::process::Signals::catch(forward_signals).ok();
    let stopped = || signals.as_ref().and_then(crate::process::Signals::caught_name);
    let mut tries = 0;
    let (ok, output, stopped_by) = loop {
        tries += 1;
        // A URL's try is cut short by a stop too (a command's gets the signal itself).
        let trying = probe.once(release, env, config.timeout, forward_signals);
        let (healthy, said) = match (&probe, &signals) {
            (Probe::Url(_), Some(caught)) if forward_signals => tokio::select! {
                tried = trying => tried,
                signal = stop_of(caught) => (false, format!("stopped by {signal} during the try")),
            },
            _ => trying.await,
        };
        if let Some(signal) = stopped() {
            break (false, said, Some(signal.to_owned()));
        }
        if healthy || tries >= config.tries {
            break (healthy, said, None);
        }
        tracing::info!(
            "health check {tries}/{} failed; next try in {}",
            config.tries,
            humantime::format_duration(config.interval)
        );
        let until = Instant::now() + config.interval;
        while Instant::now() < until && stopped().is_none() {
            tokio::time::sleep((until - Instant::now()).min(Duration::from_millis(20))).await;
        }
        if let Some(signal) = stopped() {
            break (false, said, Some(signal.to_owned()));
        }
    };
    Some(Health {
        ok,
        tries,
        duration_ms: started.elapsed().as_millis() as u64,
        output_tail: output,
        stopped_by,
    })
}

/// `url` as reports and logs show it: without credentials (`user:pass@`) or a query
/// (`?token=…`), which are the instance's to know only.
pub fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            let hidden =
                !parsed.username().is_empty() || parsed.password().is_some() || parsed.query().is_some();
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            let mut text = parsed.to_string();
            if hidden {
                text.push_str(" (credentials and query hidden)");
            }
            text
        }
        Err(_) => "(a URL that does not parse)".into(),
    }
}

/// Resolves with the signal's name once one is caught.
async fn stop_of(signals: &crate::process::Signals) -> &'static str {
    loop {
        if let Some(signal) = signals.caught_name() {
            return signal;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Why a failed check failed, in one phrase for the report.
pub fn reason(health: &Health) -> String {
    let last = health
        .output_tail
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output");
    let last: String = last.chars().take(200).collect();
    format!("health check failed {} times: {last}", health.tries)
}

enum Probe<'a> {
    Command(&'a str),
    Url(&'a str),
}

impl Probe<'_> {
    /// One try: whether it passed, and what it said.
    async fn once(
        &self,
        release: &Path,
        env: &BTreeMap<String, String>,
        timeout: Duration,
        forward_signals: bool,
    ) -> (bool, String) {
        match self {
            Probe::Command(command) => {
                let mut sh = Command::new("/bin/sh");
                sh.arg("-c").arg(command);
                let how = crate::process::How {
                    timeout,
                    quiet_stdout: true,
                    discard_stdout: false,
                    forward_signals,
                    what: "health command",
                    started: None,
                };
                match crate::process::execute(sh, release, env, &how) {
                    Ok(outcome) => {
                        let healthy = outcome.succeeded();
                        let mut said = outcome.output_tail;
                        if outcome.timed_out {
                            said.push_str(&format!(
                                "\ntimed out after {}",
                                humantime::format_duration(timeout)
                            ));
                        } else if outcome.exit_code != Some(0) {
                            said.push_str(&format!("\nexited with {}", outcome.exit_code.unwrap_or(-1)));
                        }
                        (healthy, said)
                    }
                    Err(err) => (false, format!("{err:#}")),
                }
            }
            Probe::Url(url) => get(url, timeout).await,
        }
    }
}

/// GET `url`: healthy on any 2xx. What it said: the start of the body, then the status.
async fn get(url: &str, timeout: Duration) -> (bool, String) {
    crate::tls::init();
    let shown = shown_url(url);
    let client = match reqwest::Client::builder().timeout(timeout).no_proxy().build() {
        Ok(client) => client,
        Err(err) => return (false, format!("GET {shown}: {err}")),
    };
    match client.get(url).send().await {
        Ok(mut response) => {
            let status = response.status();
            let mut body = Vec::new();
            while body.len() < BODY_TAIL {
                match response.chunk().await {
                    Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                    _ => break,
                }
            }
            body.truncate(BODY_TAIL);
            // The status last: it is the line a failure's reason quotes.
            let body = String::from_utf8_lossy(&body);
            let said = format!("{}\nGET {shown}: {status}", body.trim_end());
            (status.is_success(), said.trim_start().to_owned())
        }
        Err(err) => {
            // reqwest names the URL it failed on, credentials and all.
            let why = crate::error::one_line(&err.without_url().into());
            (false, format!("GET {shown}: {why}"))
        }
    }
}
