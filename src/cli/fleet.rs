//! `bootlace fleet` and `fleet prune`: what runs where, from the reports in the store.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::{FleetArgs, FleetCommand, GlobalArgs, print_json, runtime};
use crate::error::BadInput;
use crate::error::Exit;
use crate::fleet::{self, Fleet, Scope, html::status_name};
use crate::store;

pub fn run(global: &GlobalArgs, args: &FleetArgs) -> anyhow::Result<Exit> {
    let config = global.settings()?;
    let runtime = runtime()?;
    let _entered = runtime.enter();
    let store = store::open(&config.store, None, store::Access::Read)?;
    if let Some(FleetCommand::Prune {
        older_than,
        dry_run,
        force,
        env,
        role,
    }) = &args.command
    {
        // A live agent refreshes its report every report_interval: below that, prune
        // deletes the reports of instances that are running fine.
        let heartbeat = config.agent.report_interval;
        if *older_than < heartbeat && !*force && !*dry_run {
            return Err(BadInput(format!(
                "--older-than {} is below agent.report_interval ({}), how often live agents refresh \
                 their reports: it would delete running instances' reports too (--force to do it anyway)",
                humantime::format_duration(*older_than),
                humantime::format_duration(heartbeat)
            ))
            .into());
        }
        let scope = scope(&config, env, role, *older_than, false)?;
        let pruned = runtime.block_on(fleet::prune::prune(&store, &scope, *older_than, *dry_run))?;
        print_pruned(global, &pruned)?;
        return Ok(if pruned.failed.is_empty() {
            Exit::Ok
        } else {
            Exit::Failed
        });
    }
    // The page has a row per instance, so it keeps them too.
    let keep_instances = args.instances || args.html.is_some();
    let scope = scope(&config, &args.env, &args.role, args.stale, keep_instances)?;
    let bar = spinner(global);
    let fleet = runtime.block_on(fleet::read(&store, &scope, |n| bar.inc(n)))?;
    bar.finish_and_clear();
    if let Some(path) = &args.html {
        write_page(path, &fleet)?;
        tracing::info!("wrote {}", path.display());
    }
    if global.json {
        let instances = if args.instances { &fleet.instances[..] } else { &[] };
        print_json(&FleetJson {
            fleet: &fleet,
            instances,
        })?;
    } else if args.instances {
        print_instances(&fleet)?;
    } else {
        print_groups(&fleet)?;
    }
    if args.check {
        return check(&fleet);
    }
    Ok(Exit::Ok)
}

fn scope(
    config: &crate::config::Config,
    env: &Option<String>,
    role: &Option<String>,
    stale: Duration,
    instances: bool,
) -> anyhow::Result<Scope> {
    for (what, name) in [("environment", env), ("role", role)] {
        if let Some(name) = name {
            crate::identity::userdata::check_name(name)
                .map_err(|why| BadInput(format!("{what} {name:?} is not a valid name: {why}")))?;
        }
    }
    Ok(Scope {
        environment: env.clone(),
        role: role.clone(),
        stale,
        instances,
        pointer_template: config.deploy.pointer.clone(),
        keys: crate::trust::Keys::from_config(&config.trust)?,
        now: SystemTime::now(),
    })
}

/// `--json`: the fleet, its instances only when asked for.
#[derive(serde::Serialize)]
struct FleetJson<'a> {
    #[serde(flatten)]
    fleet: &'a Fleet,
    instances: &'a [fleet::Instance],
}

/// `--check`: exit 1, saying why, when any instance failed, rolled back or went
/// stale, or a report could not be read (a gate must not pass on a blind read).
fn check(fleet: &Fleet) -> anyhow::Result<Exit> {
    let total = fleet.total();
    let problems: Vec<String> = [
        (total.failed, "failed"),
        (total.rolled_back, "rolled back"),
        (fleet.stale_count(), "stale"),
        (fleet.unreadable_count, "unreadable"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .chain(
        // Nothing to judge (an empty store, a typo in --env) is no pass.
        (fleet.instance_count() == 0).then(|| format!("no instance reports in {}/", fleet.listed)),
    )
    .collect();
    if problems.is_empty() {
        return Ok(Exit::Ok);
    }
    eprintln!("check failed: {}", problems.join(", "));
    Ok(Exit::Failed)
}

pub(super) fn print_groups(fleet: &Fleet) -> anyhow::Result<()> {
    if fleet.groups.is_empty() {
        print_empty(fleet)?;
    } else {
        let rows: Vec<[String; 9]> = fleet
            .groups
            .iter()
            .map(|g| {
                let mark = match (g.stable, g.target) {
                    (true, _) => " (stable)",
                    (_, true) => " (target)",
                    _ => "",
                };
                [
                    g.environment.clone(),
                    g.role.clone(),
                    format!("{}{mark}", g.tag.as_deref().unwrap_or("-")),
                    g.instances.to_string(),
                    g.by_status.ok.to_string(),
                    g.by_status.failed.to_string(),
                    g.by_status.degraded.to_string(),
                    g.by_status.rolled_back.to_string(),
                    g.stale.to_string(),
                ]
            })
            .collect();
        table(
            [
                "ENVIRONMENT",
                "ROLE",
                "TAG",
                "INSTANCES",
                "OK",
                "FAILED",
                "DEGRADED",
                "ROLLED BACK",
                "STALE",
            ],
            &rows,
            3,
        )?;
    }
    print_unreadable(fleet)
}

pub(super) fn print_instances(fleet: &Fleet) -> anyhow::Result<()> {
    if fleet.instances.is_empty() {
        print_empty(fleet)?;
    } else {
        let rows: Vec<[String; 10]> = fleet
            .instances
            .iter()
            .map(|i| {
                let stale = if i.stale { ", stale" } else { "" };
                [
                    i.machine_id.clone(),
                    i.environment.clone(),
                    i.role.clone(),
                    i.context.clone().unwrap_or_else(|| "-".into()),
                    i.tag.clone().unwrap_or_else(|| "-".into()),
                    format!("{}{stale}", status_name(i.status).replace('_', " ")),
                    fleet::age(i.age_s),
                    init_cell(i),
                    i.bootlace_version.clone().unwrap_or_else(|| "-".into()),
                    arrived(i),
                ]
            })
            .collect();
        table(
            [
                "MACHINE ID",
                "ENVIRONMENT",
                "ROLE",
                "CONTEXT",
                "TAG",
                "STATUS",
                "AGE",
                "INIT",
                "VERSION",
                "ARRIVED",
            ],
            &rows,
            10,
        )?;
    }
    print_unreadable(fleet)
}

/// The init's script, and for a playbook what its tasks did and what the last drift
/// check found: `b/prod/bootstrapper.yml (2 changed; drift repaired)`.
fn init_cell(instance: &fleet::Instance) -> String {
    let script = instance.init_script.clone().unwrap_or_else(|| "-".into());
    let mut notes = Vec::new();
    if let Some(tasks) = instance.init_tasks {
        notes.push(match tasks.failed {
            0 => format!("{} changed", tasks.changed),
            failed => format!("{failed} failed"),
        });
    }
    if let Some(drift) = instance.drift {
        notes.push(format!("drift {drift}"));
    }
    match notes.is_empty() {
        true => script,
        false => format!("{script} ({})", notes.join("; ")),
    }
}

/// How an instance's last deployed release arrived: `delta 491 B`, `full 12.0 MiB`.
fn arrived(instance: &fleet::Instance) -> String {
    let via = match instance.via {
        Some(crate::report::Via::Delta) => "delta",
        Some(crate::report::Via::Full) => "full",
        None => return "-".into(),
    };
    match instance.bytes_downloaded {
        Some(bytes) => format!("{via} {}", super::list::size(bytes)),
        None => via.into(),
    }
}

fn print_empty(fleet: &Fleet) -> anyhow::Result<()> {
    let readable = if fleet.unreadable_count > 0 {
        "readable "
    } else {
        ""
    };
    outln!("no {readable}reports in {}/", fleet.listed);
    Ok(())
}

fn print_unreadable(fleet: &Fleet) -> anyhow::Result<()> {
    if fleet.unreadable_count == 0 {
        return Ok(());
    }
    outln!(
        "\n{} unreadable report{}:",
        fleet.unreadable_count,
        if fleet.unreadable_count == 1 { "" } else { "s" }
    );
    for u in &fleet.unreadable {
        outln!("  {}: {}", u.key, u.reason);
    }
    if fleet.unreadable_count > fleet.unreadable.len() as u64 {
        outln!(
            "  … and {} more",
            fleet.unreadable_count - fleet.unreadable.len() as u64
        );
    }
    Ok(())
}

/// Aligned columns, those from `numbers_from` on right-aligned.
fn table<const N: usize>(heads: [&str; N], rows: &[[String; N]], numbers_from: usize) -> anyhow::Result<()> {
    let mut widths = heads.map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut text = String::new();
        for (col, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if col > 0 {
                text.push_str("  ");
            }
            if col >= numbers_from {
                text.push_str(&format!("{cell:>width$}"));
            } else {
                text.push_str(&format!("{cell:width$}"));
            }
        }
        text.trim_end().to_owned()
    };
    outln!("{}", line(&heads));
    for row in rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        outln!("{}", line(&cells));
    }
    Ok(())
}

fn print_pruned(global: &GlobalArgs, pruned: &fleet::prune::Pruned) -> anyhow::Result<()> {
    if global.json {
        return print_json(pruned);
    }
    let verb = if pruned.dry_run { "would delete" } else { "deleted" };
    for old in &pruned.deleted {
        outln!("{verb} {} (last report {} ago)", old.key, fleet::age(old.age_s));
    }
    outln!(
        "{verb} {} report{}; kept {}",
        pruned.deleted.len(),
        if pruned.deleted.len() == 1 { "" } else { "s" },
        pruned.kept
    );
    for key in &pruned.ignored {
        tracing::warn!("left {key} alone: not a report");
    }
    for failed in &pruned.failed {
        eprintln!("error: deleting {}: {}", failed.key, failed.reason);
    }
    Ok(())
}

/// Writes the page next to its final name, then renames it there: a reader (or a
/// web server) never sees half a page.
fn write_page(path: &Path, fleet: &Fleet) -> anyhow::Result<()> {
    crate::files::write_atomic(path, fleet::html::render(fleet).as_bytes(), 0o644)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

/// A count of reports read, on a terminal only.
fn spinner(global: &GlobalArgs) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if global.quiet || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let style = indicatif::ProgressStyle::with_template("{spinner} reading reports: {pos} ({per_sec})")
        .expect("a valid template");
    let bar = indicatif::ProgressBar::new_spinner().with_style(style);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}
