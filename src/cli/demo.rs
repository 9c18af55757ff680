//! `bootlace demo`: the flow on a simulated instance in a fresh temp dir, with nothing
//! but the binary: the sample user-data and release of `examples/` are built in. It
//! resolves the identity, then packages the sample release and pushes it to a local
//! `file://` store. Later steps join as they are built.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{GlobalArgs, print_json, runtime};
use crate::config::Config;
use crate::exit::Exit;
use crate::identity::{self, SourceSpec};
use crate::release::push::push;
use crate::store;

const USER_DATA: &str = include_str!("../../examples/user-data");
const TAG: &str = "demo-1";

/// The sample release: path, contents, mode.
const RELEASE: [(&str, &str, u32); 4] = [
    (
        "app/hello.txt",
        include_str!("../../examples/release/app/hello.txt"),
        0o644,
    ),
    (
        "bootstrap/b/prod/i-0123456789abcdef0.sh",
        include_str!("../../examples/release/bootstrap/b/prod/i-0123456789abcdef0.sh"),
        0o755,
    ),
    (
        "bootstrap/b/prod/bootstrapper.sh",
        include_str!("../../examples/release/bootstrap/b/prod/bootstrapper.sh"),
        0o755,
    ),
    (
        "bootstrap/b/bootstrapper.sh",
        include_str!("../../examples/release/bootstrap/b/bootstrapper.sh"),
        0o755,
    ),
];

pub fn run(global: &GlobalArgs) -> anyhow::Result<Exit> {
    let dir = tempfile::Builder::new().prefix("bootlace-demo-").tempdir()?;
    let say = |line: &str| -> anyhow::Result<()> {
        if !global.json {
            outln!("{line}");
        }
        Ok(())
    };
    say(&format!("bootlace demo in {}", dir.path().display()))?;

    let user_data = dir.path().join("user-data");
    std::fs::write(&user_data, USER_DATA)?;
    say(&format!(
        "\n== identity: a simulated instance reads its user-data from {}",
        user_data.display()
    ))?;
    for line in USER_DATA.lines() {
        say(&format!("   | {line}"))?;
    }
    let mut config = Config::default();
    config.identity.source = SourceSpec::File(user_data);
    let store_url = reqwest::Url::from_directory_path(dir.path().join("store"))
        .map_err(|()| anyhow::anyhow!("{} is not an absolute path", dir.path().display()))?;
    config.store.url = Some(store_url.to_string());
    let runtime = runtime()?;
    let identity = runtime.block_on(identity::resolve(&config.identity, &config.identity.source))?;
    if !global.json {
        say("\n== resolved identity (what `bootlace identity` prints)")?;
        outln!("{}", identity.to_text().trim_end());
    }

    let release = dir.path().join("release");
    write_release(&release)?;
    let environment = identity.environment.clone().unwrap_or_else(|| "prod".into());
    say(&format!(
        "\n== release: the operator pushes {} as {TAG} and points {environment} at it",
        release.display()
    ))?;
    say(&format!(
        "   $ bootlace --store {} release push {} --tag {TAG} --env {environment}",
        config.store.url.as_deref().unwrap_or_default(),
        release.display()
    ))?;
    let _entered = runtime.enter();
    let store = store::open(&config.store, None, store::Access::Write)?;
    let limits = config.deploy.limits();
    let pushed = runtime.block_on(push(&store, &release, TAG, Some(&environment), limits, |_| {}))?;
    say(&format!(
        "   pushed {TAG}: {} files, sha256 {}",
        pushed.manifest.files, pushed.manifest.sha256
    ))?;
    say("   $ bootlace release list")?;
    if !global.json {
        runtime.block_on(super::release::list(global, &config, &store, None))?;
    }

    config.deploy.state_dir = dir.path().join("state");
    say(&format!(
        "\n== boot: the instance runs `bootlace run` with its state in {}",
        config.deploy.state_dir.display()
    ))?;
    say("   init candidates, most specific first; the first that exists runs, and only it:")?;
    for candidate in &config.init.candidates {
        say(&format!("     {}/{candidate}", config.init.root))?;
    }
    say("   --- init output ---")?;
    let ran = runtime.block_on(crate::run::boot(
        &config,
        indicatif::ProgressBar::hidden(),
        global.json,
    ))?;
    if global.json {
        print_json(
            &serde_json::json!({"identity": identity, "manifest": pushed.manifest, "report": ran.report}),
        )?;
    } else {
        say("   --- end of init output ---")?;
        say(&format!(
            "\n== report: {}/last-run.json",
            config.deploy.state_dir.display()
        ))?;
        outln!("{}", String::from_utf8_lossy(&ran.report.to_json()).trim_end());
        say(&format!("\ndemo finished: {}", ran.report.summary()))?;
    }
    Ok(ran.exit)
}

fn write_release(root: &Path) -> std::io::Result<()> {
    for (path, contents, mode) in RELEASE {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("a file in a folder"))?;
        std::fs::write(&path, contents)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}
