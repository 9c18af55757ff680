//! `bootlace demo`: the flow on a simulated instance in a fresh temp dir, with nothing
//! but the binary: the sample user-data and release of `examples/` are built in. It
//! resolves the identity, packages the sample release and pushes it to a local
//! `file://` store, boots the instance from it (`run`), then shows the agent at work:
//! an update reaching the running instance, and a broken release rolled back; last,
//! two more instances boot and `fleet` shows what runs where.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{GlobalArgs, print_json, runtime};
use crate::config::Config;
use crate::error::Exit;
use crate::identity::{self, SourceSpec};
use crate::release::push::push;
use crate::release::sign::{Author, Expiry};
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

/// The demo's temp dir, config and store, and how it speaks (not at all with `--json`).
struct Demo<'a> {
    global: &'a GlobalArgs,
    dir: tempfile::TempDir,
    config: Config,
    runtime: tokio::runtime::Runtime,
}

/// What the operator's side of the demo pushes with: the store, the signing author,
/// and the environment whose pointer moves.
struct Operator<'a> {
    store: &'a store::Store,
    author: &'a Author,
    environment: &'a str,
}

impl Demo<'_> {
    fn say(&self, line: &str) -> anyhow::Result<()> {
        if !self.global.json {
            outln!("{line}");
        }
        Ok(())
    }
}

pub fn run(global: &GlobalArgs) -> anyhow::Result<Exit> {
    let dir = tempfile::Builder::new().prefix("bootlace-demo-").tempdir()?;
    let mut demo = Demo {
        global,
        dir,
        config: Config::default(),
        runtime: runtime()?,
    };
    demo.say(&format!("bootlace demo in {}", demo.dir.path().display()))?;
    let identity = demo.identity()?;
    let author = demo.keys()?;
    let environment = identity.environment.clone().unwrap_or_else(|| "prod".into());
    let _entered = demo.runtime.enter();
    let store = store::open(&demo.config.store, None, store::Access::Write)?;
    let op = Operator {
        store: &store,
        author: &author,
        environment: &environment,
    };
    let pushed = demo.first_release(&op)?;
    let ran = demo.boot()?;
    if ran.exit != Exit::Ok {
        return Ok(ran.exit);
    }
    secrets_plan(&|line| demo.say(line), &identity)?;

    // The agent: a new release reaches the running instance, a broken one is undone.
    demo.config.agent.hold_file = demo.dir.path().join("hold");
    let update = demo.agent_step(
        &op,
        "demo-2",
        "hello from the second release\n",
        "",
        "update: the operator pushes demo-2; the agent on the running instance picks it up",
    )?;
    let rollback = demo.agent_step(
        &op,
        "demo-3",
        "hello from a broken release\n",
        "echo 'demo-3: the service does not start' >&2\nexit 1\n",
        "rollback: demo-3's init fails; the agent switches back to demo-2, the last good release",
    )?;
    if let Some(from) = &rollback.rolled_back_from {
        demo.say(&format!("   rolled back from {}: {}", from.tag, from.reason))?;
    }
    let refused = demo.runtime.block_on(demo.tamper(&op))?;

    demo.say(&format!(
        "\n== fleet: the operator points {environment} back at demo-2, two more instances boot, \
         and the store shows what runs where"
    ))?;
    let mut config = std::mem::take(&mut demo.config);
    let fleet = demo.runtime.block_on(demo.more_instances(&mut config, &op))?;
    if global.json {
        print_json(
            &serde_json::json!({"identity": identity, "manifest": pushed.manifest,
            "report": ran.report, "update": update, "rollback": rollback, "refused": refused,
            "fleet": fleet}),
        )?;
    } else {
        demo.say(&format!(
            "\ndemo finished: {}\n   then updated to {}, rolled back from demo-3 to {}, and refused a \
             tampered pointer",
            ran.report.summary(),
            update.tag.as_deref().unwrap_or("-"),
            rollback.tag.as_deref().unwrap_or("-")
        ))?;
    }
    let shown = update.status == crate::report::Status::Ok
        && rollback.status == crate::report::Status::RolledBack
        && refused.status == crate::report::Status::Degraded;
    Ok(if shown { Exit::Ok } else { Exit::Failed })
}

impl Demo<'_> {
    /// Writes the sample user-data, shows it, and resolves the identity from it; the
    /// store is a `file://` folder in the temp dir.
    fn identity(&mut self) -> anyhow::Result<identity::Identity> {
        let dir = self.dir.path();
        let user_data = dir.join("user-data");
        std::fs::write(&user_data, USER_DATA)?;
        self.say(&format!(
            "\n== identity: a simulated instance reads its user-data from {}",
            user_data.display()
        ))?;
        for line in USER_DATA.lines() {
            self.say(&format!("   | {line}"))?;
        }
        self.config.identity.source = SourceSpec::File(user_data);
        let store_url = reqwest::Url::from_directory_path(dir.join("store"))
            .map_err(|()| anyhow::anyhow!("{} is not an absolute path", dir.display()))?;
        self.config.store.url = Some(store_url.to_string());
        let identity = self.runtime.block_on(identity::resolve(
            &self.config.identity,
            &self.config.identity.source,
        ))?;
        if !self.global.json {
            self.say("\n== resolved identity (what `bootlace identity` prints)")?;
            outln!("{}", identity.to_text().trim_end());
        }
        Ok(identity)
    }

    /// Everything the operator writes is signed, and the instance checks it.
    fn keys(&mut self) -> anyhow::Result<Author> {
        let generated = crate::keys::generate(self.dir.path(), None)?;
        self.config.trust.keys = vec![generated.public_key.clone()];
        let author = Author::new(
            crate::release::who(),
            Some(&generated.secret_key_file),
            Expiry::default(),
            Default::default(),
        )?;
        self.say(&format!(
            "\n== keys: the release team signs what it pushes; the instance trusts its public key\n   \
             $ bootlace key generate --unencrypted --dir {}\n   key id {}, and in the instance's config: \
             [trust] keys = [\"{}\"]",
            self.dir.path().display(),
            generated.key_id,
            generated.public_key
        ))?;
        Ok(author)
    }

    /// Pushes the sample release as the first tag and lists the releases.
    /// Pushes `tree` as `tag`, signed, and points the environment at it.
    fn push(&self, op: &Operator, tree: &Path, tag: &str) -> anyhow::Result<crate::release::push::Pushed> {
        self.runtime.block_on(push(
            op.store,
            tree,
            tag,
            Some(op.environment),
            &crate::release::push::Options {
                limits: self.config.deploy.limits(),
                deltas: crate::release::push::Deltas::Recent(3),
            },
            op.author,
            |_| {},
        ))
    }

    fn first_release(&self, op: &Operator) -> anyhow::Result<crate::release::push::Pushed> {
        let (store, environment) = (op.store, op.environment);
        let release = self.dir.path().join("release");
        write_release(&release)?;
        self.say(&format!(
            "\n== release: the operator pushes {} as {TAG} and points {environment} at it",
            release.display()
        ))?;
        self.say(&format!(
            "   $ bootlace --store {} release push {} --tag {TAG} --env {environment} --sign-key …/bootlace.key",
            self.config.store.url.as_deref().unwrap_or_default(),
            release.display()
        ))?;
        let pushed = self.push(op, &release, TAG)?;
        self.say(&format!(
            "   pushed {TAG}: {} files, sha256 {}",
            pushed.manifest.files, pushed.manifest.sha256
        ))?;
        self.say("   $ bootlace release list")?;
        if !self.global.json {
            self.runtime
                .block_on(super::list::list(self.global, &self.config, store, None))?;
        }
        Ok(pushed)
    }

    /// The instance's first boot: `bootlace run`, and the report it writes.
    fn boot(&mut self) -> anyhow::Result<crate::run::Ran> {
        self.config.deploy.state_dir = self.dir.path().join("state");
        self.say(&format!(
            "\n== boot: the instance runs `bootlace run` with its state in {}",
            self.config.deploy.state_dir.display()
        ))?;
        self.say("   init candidates, most specific first; the first that exists runs, and only it:")?;
        for candidate in &self.config.init.candidates {
            self.say(&format!("     {}/{candidate}", self.config.init.root))?;
        }
        self.say("   --- init output ---")?;
        let ran = self.runtime.block_on(crate::run::boot(
            &self.config,
            indicatif::ProgressBar::hidden(),
            self.global.json,
        ))?;
        if !self.global.json {
            self.say("   --- end of init output ---")?;
            self.say(&format!(
                "\n== report: {}/last-run.json",
                self.config.deploy.state_dir.display()
            ))?;
            outln!("{}", String::from_utf8_lossy(&ran.report.to_json()).trim_end());
            self.say(&format!("   {}", ran.report.summary()))?;
        }
        Ok(ran)
    }

    /// Pushes `tag` (the sample release with another hello, and `init_exit` appended to
    /// the init script) and lets the agent act on it once.
    fn agent_step(
        &self,
        op: &Operator,
        tag: &str,
        hello: &str,
        init_exit: &str,
        story: &str,
    ) -> anyhow::Result<crate::report::Report> {
        let environment = op.environment;
        self.say(&format!("\n== {story}"))?;
        let tree = self.dir.path().join(tag);
        write_release(&tree)?;
        std::fs::write(tree.join("app/hello.txt"), hello)?;
        if !init_exit.is_empty() {
            let script = tree.join("bootstrap/b/prod/i-0123456789abcdef0.sh");
            let mut text = std::fs::read_to_string(&script)?;
            text.push_str(init_exit);
            std::fs::write(&script, text)?;
        }
        self.say(&format!(
            "   $ bootlace release push {} --tag {tag} --env {environment}",
            tree.display()
        ))?;
        self.push(op, &tree, tag)?;
        self.say("   $ bootlace agent --once      (what the running agent does at its next check)")?;
        self.say("   --- init output ---")?;
        self.runtime
            .block_on(crate::agent::run(&self.config, true, self.global.json))?;
        self.say("   --- end of init output ---")?;
        let report = crate::report::Report::load(&self.config.deploy.state_dir)?
            .ok_or_else(|| anyhow::anyhow!("the agent wrote no report"))?;
        self.say(&format!("   {}", report.summary()))?;
        if let Some(arrival) = &report.arrival {
            self.say(&format!("   {}", arrival.describe()))?;
        }
        Ok(report)
    }
}

/// What a boot would also do with `[secrets]` in its config. The demo has no AWS to
/// fetch from, so it shows the plan, as `bootlace plan` prints it.
fn secrets_plan(
    say: &dyn Fn(&str) -> anyhow::Result<()>,
    identity: &identity::Identity,
) -> anyhow::Result<()> {
    let mut config = crate::secrets::Config::default();
    for (name, source) in [
        ("db_password", "ssm:/{environment}/{role}/db_password"),
        ("api_token", "secretsmanager:{environment}/{role}/api-token"),
    ] {
        let name = crate::secrets::Name::try_from(name.to_owned()).map_err(anyhow::Error::msg)?;
        let source = crate::secrets::Source::try_from(source.to_owned()).map_err(anyhow::Error::msg)?;
        config.items.insert(name, source);
    }
    say("\n== secrets: with these lines in its config, every boot and update also fetches, before init,")?;
    say("   with the instance role, values that are in neither the image nor the release")?;
    say("   | [secrets.items]")?;
    for (name, source) in &config.items {
        say(&format!("   | {} = \"{source}\"", name.as_str()))?;
    }
    say(&format!(
        "   and init finds them as files (0400) in $BOOTLACE_SECRETS_DIR, a tmpfs dir ({} by default);\n   \
         `bootlace plan` lists them without fetching:",
        config.dir.display()
    ))?;
    for planned in crate::secrets::plan(&config, identity)? {
        say(&format!("     {:12} {}", planned.name, planned.source))?;
    }
    say("   (this demo has no SSM or Secrets Manager to fetch from: docs/secrets.md)")
}

impl Demo<'_> {
    /// Someone with write access to the bucket, but not the signing key, points the
    /// environment back at the older demo-1: the agent refuses the pointer and keeps
    /// what it runs.
    async fn tamper(&self, op: &Operator<'_>) -> anyhow::Result<crate::report::Report> {
        let (store, environment) = (op.store, op.environment);
        self.say(&format!(
            "\n== signatures: someone without the key edits pointers/{environment}.json to name the older demo-1"
        ))?;
        let key = store::layout::pointer(environment);
        let bad = crate::release::Manifest::load_complete(store, TAG).await?;
        let mut pointer = crate::release::Pointer::load(store, environment)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no pointer {environment}"))?;
        (pointer.tag, pointer.sha256, pointer.size) = (bad.tag, bad.sha256, bad.size);
        store.put(&key, pointer.to_json()).await?;
        self.say("   $ bootlace agent --once")?;
        crate::agent::run(&self.config, true, true).await?;
        let report = crate::report::Report::load(&self.config.deploy.state_dir)?
            .ok_or_else(|| anyhow::anyhow!("the agent wrote no report"))?;
        self.say(&format!("   {}", report.summary()))?;
        if let Some(error) = &report.error {
            self.say(&format!("   {error}"))?;
        }
        Ok(report)
    }

    /// Moves the pointer back to demo-2 (a signed rollback, which writes a good pointer
    /// over the tampered one), boots two more instances from it (each with `config`
    /// changed to its own identity and state dir), and reads the fleet from their
    /// reports.
    async fn more_instances(
        &self,
        config: &mut Config,
        op: &Operator<'_>,
    ) -> anyhow::Result<crate::fleet::Fleet> {
        let (store, author, environment) = (op.store, op.author, op.environment);
        self.say(&format!("   $ bootlace release rollback --env {environment}"))?;
        let good = crate::release::Manifest::load_complete(store, "demo-2").await?;
        let moved =
            crate::release::move_pointer(store, environment, author, |_| std::future::ready(Ok(good)))
                .await?;
        self.say(&format!(
            "   pointer {environment} -> {} at serial {}",
            moved.pointer.tag, moved.pointer.serial
        ))?;
        for n in 1..=2 {
            let machine_id = format!("i-0123456789abcdef{n}");
            let user_data = self.dir.path().join(format!("user-data-{n}"));
            std::fs::write(&user_data, USER_DATA.replace("i-0123456789abcdef0", &machine_id))?;
            config.identity.source = SourceSpec::File(user_data);
            config.deploy.state_dir = self.dir.path().join(format!("state-{n}"));
            self.say(&format!("   $ bootlace run      (on {machine_id})"))?;
            let ran = crate::run::boot(config, indicatif::ProgressBar::hidden(), true).await?;
            self.say(&format!("   {}", ran.report.summary()))?;
        }
        let scope = crate::fleet::Scope {
            environment: None,
            role: None,
            stale: std::time::Duration::from_secs(2 * 3600),
            instances: true,
            pointer_template: config.deploy.pointer.clone(),
            keys: crate::trust::Keys::from_config(&config.trust)?,
            now: std::time::SystemTime::now(),
        };
        let fleet = crate::fleet::read(store, &scope, |_| {}).await?;
        if !self.global.json {
            self.say("   $ bootlace fleet")?;
            super::fleet::print_groups(&fleet)?;
            self.say("   $ bootlace fleet --instances")?;
            super::fleet::print_instances(&fleet)?;
        }
        Ok(fleet)
    }
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
