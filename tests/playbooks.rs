//! Black-box: playbook inits (DESIGN §6.10) on the real `ansible-core` from PyPI, with
//! a real community role (OpenStack's chrony role, as its PyPI wheel ships it) vendored
//! through the real `ansible-galaxy role install` from a `file://` tarball.
//! `scripts/test.sh` installs both into `.venv-ansible`.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::{Outcome, bootlace, run, write};

/// Where `scripts/test.sh` installs ansible-core, and the chrony role's wheel.
fn ansible_venv() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-ansible");
    assert!(
        venv.join("bin/ansible-playbook").is_file(),
        "ansible-core is not installed: run scripts/test.sh, which installs it into .venv-ansible \
         (python3 -m venv .venv-ansible && .venv-ansible/bin/pip install 'ansible-core>=2.19,<2.20')"
    );
    venv
}

/// The chrony role as a tarball, unpacked from the wheel `scripts/test.sh` downloads.
fn chrony_tarball(dir: &Path) -> PathBuf {
    let wheels = ansible_venv().join("wheels");
    let wheel = std::fs::read_dir(&wheels)
        .ok()
        .and_then(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .find(|p| p.to_string_lossy().contains("ansible_role_chrony"))
        })
        .unwrap_or_else(|| {
            panic!(
                "no ansible_role_chrony wheel in {}: run scripts/test.sh (pip download --no-deps \
                 -d .venv-ansible/wheels ansible-role-chrony==1.3.0)",
                wheels.display()
            )
        });
    let unpacked = dir.join("wheel");
    let out = run(Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&unpacked));
    assert_eq!(out.code, 0, "{}", out.all());
    let data = std::fs::read_dir(&unpacked)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".data"))
        .expect("the wheel's .data folder");
    let roles = data.join("data/share/ansible/roles");
    let tarball = dir.join("chrony.tar.gz");
    let out = run(Command::new("tar")
        .arg("-C")
        .arg(&roles)
        .arg("-czf")
        .arg(&tarball)
        .arg("chrony"));
    assert_eq!(out.code, 0, "{}", out.all());
    tarball
}

/// An operator's tree with a playbook init using the chrony role, a `file://` store and
/// instances.
struct Site {
    dir: tempfile::TempDir,
}

const PLAYBOOK: &str = r#"- hosts: localhost
  gather_facts: true
  vars:
    chrony_role_action: config
    chrony_config_file_location: "{{ bootlace_conf_dir }}/chrony.conf"
    chrony_manage_service: false
    chrony_manage_package: false
    chrony_ntp_servers: ["ntp.{{ bootlace_environment }}.example"]
  roles:
    - chrony
  tasks:
    - name: Record who this is
      ansible.builtin.copy:
        dest: "{{ bootlace_conf_dir }}/who"
        content: "{{ bootlace_environment }} {{ bootlace_role }} {{ bootlace_machine_id }} {{ bootlace_tag }}\n"
        mode: "0644"
"#;

impl Site {
    fn new() -> Self {
        let site = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        let conf = site.path("etc");
        std::fs::create_dir_all(&conf).unwrap();
        write(
            site.dir.path(),
            "user-data",
            format!(
                "environment=prod\nrole=web\ncontext=b\nmachine_id=i-play\nconf_dir={}\n",
                conf.display()
            ),
        );
        write(
            site.dir.path(),
            "config.toml",
            "[init]\ncandidates = [\"{context}/{environment}/bootstrapper\", \"{context}/bootstrapper\"]\n",
        );
        let tarball = chrony_tarball(site.dir.path());
        let bootstrap = site.path("tree/bootstrap");
        std::fs::create_dir_all(bootstrap.join("b/prod")).unwrap();
        write(&site.path("tree"), "app.txt", "the application\n");
        write(
            &bootstrap,
            "requirements.yml",
            format!("- src: file://{}\n  name: chrony\n", tarball.display()),
        );
        write(&bootstrap.join("b/prod"), "bootstrapper.yml", PLAYBOOK);
        site
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, state: &str) -> Command {
        let mut command = bootlace();
        let path = std::env::var("PATH").unwrap_or_default();
        command
            .env(
                "BOOTLACE_STORE",
                format!("file://{}", self.path("store").display()),
            )
            .env("BOOTLACE_STATE_DIR", self.path(state))
            .env(
                "BOOTLACE_IDENTITY",
                format!("file:{}", self.path("user-data").display()),
            )
            .env("BOOTLACE_CONFIG", self.path("config.toml"))
            .env("PATH", format!("{}:{path}", ansible_venv().join("bin").display()));
        command
    }

    fn run(&self, state: &str, args: &[&str]) -> Outcome {
        run(self.command(state).args(args))
    }

    fn ok(&self, state: &str, args: &[&str]) -> String {
        let out = self.run(state, args);
        assert_eq!(out.code, 0, "{args:?}: {}", out.all());
        out.stdout
    }

    fn vendor(&self) -> Value {
        let tree = self.path("tree");
        serde_json::from_str(&self.ok(
            "operator",
            &["--json", "release", "vendor", tree.to_str().unwrap()],
        ))
        .unwrap()
    }

    fn push(&self, tag: &str) -> Outcome {
        let tree = self.path("tree");
        self.run(
            "operator",
            &[
                "release",
                "push",
                tree.to_str().unwrap(),
                "--tag",
                tag,
                "--env",
                "prod",
            ],
        )
    }

    fn boot(&self, state: &str) -> (i32, Value) {
        let out = self.run(state, &["--json", "run"]);
        let report = serde_json::from_str(&out.stdout).unwrap_or_else(|_| panic!("{}", out.all()));
        (out.code, report)
    }
}

#[test]
fn a_vendored_community_role_boots_offline_and_is_idempotent() {
    let site = Site::new();
    let lock = site.vendor();
    assert_eq!(lock["roles"][0]["name"], "chrony", "{lock}");
    assert!(
        lock["roles"][0]["source"]
            .as_str()
            .unwrap()
            .starts_with("file://"),
        "{lock}"
    );
    assert_eq!(
        lock["roles"][0]["tree_sha256"].as_str().unwrap().len(),
        64,
        "{lock}"
    );
    assert!(site.path("tree/bootstrap/roles/chrony/tasks/main.yml").is_file());
    assert!(site.path("tree/bootstrap/vendor.lock.json").is_file());
    // Vendoring again gives the same tree hash: it does not depend on the install time.
    assert_eq!(
        site.vendor()["roles"][0]["tree_sha256"],
        lock["roles"][0]["tree_sha256"]
    );
    let pushed = site.push("v1");
    assert_eq!(pushed.code, 0, "{}", pushed.all());

    // The first boot, with no network at all: the role's template is written.
    let mut offline = support::with_env_of(&site.command("a"), "unshare");
    offline.args([
        "--net",
        "--map-root-user",
        env!("CARGO_BIN_EXE_bootlace"),
        "--json",
        "run",
    ]);
    let out = run(&mut offline);
    assert_eq!(out.code, 0, "{}", out.all());
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    let init = &report["init"];
    assert_eq!(init["runner"], "ansible", "{report}");
    assert_eq!(init["script"], "b/prod/bootstrapper.yml", "{report}");
    assert_eq!(init["exit_code"], 0, "{report}");
    assert!(init["tasks"]["changed"].as_u64().unwrap() >= 2, "{report}");
    assert_eq!(init["tasks"]["failed"], 0, "{report}");
    let changed: Vec<&str> = init["changed_tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(
        changed.contains(&"chrony : Install chrony configuration file")
            && changed.contains(&"Record who this is"),
        "{changed:?}"
    );
    let conf = std::fs::read_to_string(site.path("etc/chrony.conf")).unwrap();
    assert!(conf.contains("server ntp.prod.example"), "{conf}");
    let who = std::fs::read_to_string(site.path("etc/who")).unwrap();
    assert_eq!(who, "prod web i-play v1\n");

    // The next boot changes nothing.
    let (code, report) = site.boot("a");
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["init"]["tasks"]["changed"], 0, "{report}");
    assert!(report["init"].get("changed_tasks").is_none(), "{report}");
    assert!(report["init"]["tasks"]["ok"].as_u64().unwrap() >= 2, "{report}");
}

#[test]
fn a_failing_task_rolls_back_to_the_last_good_release() {
    let site = Site::new();
    site.vendor();
    assert_eq!(site.push("v1").code, 0);
    let (code, _) = site.boot("a");
    assert_eq!(code, 0);
    let playbook = site.path("tree/bootstrap/b/prod/bootstrapper.yml");
    let failing = format!(
        "{PLAYBOOK}    - name: Refuse this release\n      ansible.builtin.fail:\n        msg: not today\n"
    );
    std::fs::write(&playbook, failing).unwrap();
    assert_eq!(site.push("v2").code, 0);
    let (code, report) = site.boot("a");
    assert_eq!(code, 4, "{report}");
    assert_eq!(report["status"], "rolled_back", "{report}");
    let failed = &report["rolled_back_from"];
    assert_eq!(failed["tag"], "v2", "{report}");
    let link = std::fs::read_link(site.path("a/current")).unwrap();
    assert!(link.ends_with("v1"), "{link:?}");
    let out = site.run("a", &["--json", "status"]);
    let last: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(last["tag"], "v1", "{last}");
}

#[test]
fn push_refuses_a_release_that_is_not_self_contained_or_is_ambiguous() {
    let site = Site::new();
    // The role was never vendored: the push names it, and spends no tag.
    let out = site.push("v1");
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr.contains("b/prod/bootstrapper.yml") && out.stderr.contains("chrony"),
        "{}",
        out.stderr
    );
    assert!(!site.path("store/builds/v1.json").exists());

    // A module from a collection the release does not carry.
    site.vendor();
    let playbook = site.path("tree/bootstrap/b/prod/bootstrapper.yml");
    let needs = format!(
        "{PLAYBOOK}    - name: Tune a setting\n      community.general.ini_file:\n        path: /tmp/x.ini\n        section: a\n        option: b\n        value: c\n"
    );
    std::fs::write(&playbook, needs).unwrap();
    let out = site.push("v1");
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr.contains("community.general.ini_file"),
        "{}",
        out.stderr
    );

    // A script and a playbook for the same candidate: which would run is not clear.
    std::fs::write(&playbook, PLAYBOOK).unwrap();
    let script = write(
        &site.path("tree/bootstrap/b/prod"),
        "bootstrapper.sh",
        "#!/bin/sh\ntrue\n",
    );
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = site.push("v1");
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr
            .contains("b/prod/bootstrapper.sh, b/prod/bootstrapper.yml"),
        "{}",
        out.stderr
    );
    std::fs::remove_file(&script).unwrap();
    assert_eq!(site.push("v1").code, 0);

    // The same ambiguity in a release already pushed: plan and run say so (exit 2).
    site.ok("a", &["deploy"]);
    let held = site.path("a/releases/v1/bootstrap/b/prod/bootstrapper.sh");
    std::fs::write(&held, "#!/bin/sh\ntrue\n").unwrap();
    let out = site.run("a", &["plan"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("keep one"), "{}", out.stderr);
}

#[test]
fn plan_names_the_runner_and_a_missing_ansible_playbook_fails_before_anything_runs() {
    let site = Site::new();
    site.vendor();
    assert_eq!(site.push("v1").code, 0);
    site.ok("a", &["deploy"]);
    let plan = site.ok("a", &["plan"]);
    assert!(
        plan.contains("b/prod/bootstrapper.yml") && plan.contains("would run"),
        "{plan}"
    );
    let runner_line = plan.lines().find(|l| l.starts_with("runner")).unwrap_or_default();
    assert!(
        runner_line.contains("ansible:") && runner_line.contains("ansible-playbook [core 2.19"),
        "{plan}"
    );
    let json: Value = serde_json::from_str(&site.ok("a", &["--json", "plan"])).unwrap();
    assert_eq!(json["runner"]["name"], "ansible", "{json}");
    assert!(json["runner"]["missing"].is_null(), "{json}");

    // An image without Ansible: plan says what to install; a boot fails before the
    // playbook runs, and says the same.
    let mut bare = site.command("a");
    bare.env("PATH", "/usr/bin:/bin");
    let out = run(bare.arg("plan"));
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("install ansible-core"), "{}", out.stdout);
    let mut bare = site.command("a");
    bare.env("PATH", "/usr/bin:/bin");
    let out = run(bare.args(["--json", "run"]));
    assert_eq!(out.code, 1, "{}", out.all());
    let errors: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{}", out.stderr);
    assert!(errors[0].contains("install ansible-core"), "{}", errors[0]);
    assert!(!site.path("etc/chrony.conf").exists(), "nothing ran");
}

#[test]
fn no_secret_value_reaches_argv_the_vars_file_or_the_report() {
    let site = Site::new();
    site.vendor();
    // The secret is in moto's SSM; the playbook reads it from the secrets dir, checks
    // it, and records every process's argv while it runs.
    let moto = &support::s3::moto().endpoint;
    let unique = format!("t{:012x}", fastrand::u64(..1 << 48));
    let secret = format!("s3cr3t-{unique}");
    support::aws::put_parameter(moto, &format!("/{unique}/token"), &secret);
    let playbook = format!(
        "{PLAYBOOK}    - name: Use the token\n      ansible.builtin.shell: |\n        sha256sum < {{{{ bootlace_secrets_dir }}}}/token | cut -c1-64 > {{{{ bootlace_conf_dir }}}}/token.sha256\n        ps -eo args > {{{{ bootlace_conf_dir }}}}/argv\n        vars=$(grep -o '@[^ ]*/vars-[^ ]*[.]json' {{{{ bootlace_conf_dir }}}}/argv | head -1 | cut -c2-)\n        stat -c %a \"$vars\" > {{{{ bootlace_conf_dir }}}}/vars.mode\n        cp \"$vars\" {{{{ bootlace_conf_dir }}}}/vars\n      changed_when: false\n"
    );
    write(&site.path("tree/bootstrap/b/prod"), "bootstrapper.yml", playbook);
    assert_eq!(site.push("v1").code, 0);
    let secrets = tempfile::tempdir_in("/dev/shm").expect("/dev/shm (a tmpfs) for the secrets dir");
    let config = format!(
        "[init]\ncandidates = [\"{{context}}/{{environment}}/bootstrapper\"]\n[secrets]\ndir = \"{}\"\n\
         [secrets.items]\ntoken = \"ssm:/{unique}/token\"\n",
        secrets.path().join("s").display()
    );
    write(site.dir.path(), "config.toml", config);
    let out = run(site
        .command("a")
        .env("AWS_ENDPOINT_URL_SSM", moto)
        .env("AWS_REGION", "us-east-1")
        .args(["--json", "run"]));
    assert_eq!(out.code, 0, "{}", out.all());
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    // The playbook read the secret (its sha256 proves it without the value in argv).
    let read = std::fs::read_to_string(site.path("etc/token.sha256")).unwrap();
    assert_eq!(
        read.trim(),
        support::archives::sha256_hex(secret.as_bytes()),
        "{report}"
    );
    assert!(
        !out.stdout.contains(&secret) && !out.stderr.contains(&secret),
        "{}",
        out.all()
    );
    let argv = std::fs::read_to_string(site.path("etc/argv")).unwrap();
    assert!(argv.contains("ansible-playbook"), "{argv}");
    assert!(!argv.contains(&secret), "{argv}");
    let vars: Value = serde_json::from_str(&std::fs::read_to_string(site.path("etc/vars")).unwrap()).unwrap();
    assert_eq!(vars["bootlace_environment"], "prod", "{vars}");
    assert_eq!(vars["bootlace_tag"], "v1", "{vars}");
    assert_eq!(
        vars["bootlace_secrets_dir"],
        secrets.path().join("s").display().to_string(),
        "{vars}"
    );
    assert!(!vars.to_string().contains(&secret), "{vars}");
    assert_eq!(
        std::fs::read_to_string(site.path("etc/vars.mode"))
            .unwrap()
            .trim(),
        "600"
    );
    // Nothing under the state dir (the vars file is gone, but the callback, the report
    // and the init record stay) or in the store holds it.
    for root in [site.path("a"), site.path("store")] {
        for file in walk(&root) {
            let bytes = std::fs::read(&file).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(&secret),
                "{} holds the secret",
                file.display()
            );
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&path));
        } else if entry.file_type().is_ok_and(|t| t.is_file()) {
            out.push(path);
        }
    }
    out
}

#[test]
fn plan_check_names_exactly_the_task_a_hand_edit_undid_and_changes_nothing() {
    let site = Site::new();
    site.vendor();
    assert_eq!(site.push("v1").code, 0);
    let (code, report) = site.boot("a");
    assert_eq!(code, 0, "{report}");
    // As the playbook left it: no drift, exit 0 even with --exit-code.
    let out = site.run("a", &["plan", "--check", "--exit-code"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("drift      none"), "{}", out.stdout);

    let conf = site.path("etc/chrony.conf");
    std::fs::write(&conf, "server evil.example\n").unwrap();
    let out = site.run("a", &["--json", "plan", "--check", "--exit-code"]);
    assert_eq!(out.code, 5, "{}", out.all());
    let checked: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(checked["drift"], true, "{checked}");
    assert_eq!(
        checked["changed_tasks"],
        serde_json::json!(["chrony : Install chrony configuration file"]),
        "{checked}"
    );
    assert_eq!(checked["tasks"]["changed"], 1, "{checked}");
    assert_eq!(
        checked["paths"],
        serde_json::json!([conf.display().to_string()]),
        "{checked}"
    );
    // Check mode changed nothing, and no diff reached the output's JSON.
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), "server evil.example\n");
    assert!(!checked.to_string().contains("evil.example"), "{checked}");
    // Without --exit-code, drift is reported and the exit is 0.
    let out = site.run("a", &["plan", "--check"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout.contains("1 of") && out.stdout.contains("chrony : Install chrony configuration file"),
        "{}",
        out.stdout
    );
}

#[test]
fn the_agent_reports_drift_and_with_apply_repairs_it_without_a_rollback() {
    let site = Site::new();
    site.vendor();
    assert_eq!(site.push("v1").code, 0);
    let (code, report) = site.boot("a");
    assert_eq!(code, 0, "{report}");
    let conf = site.path("etc/chrony.conf");
    let pristine = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, "server evil.example\n").unwrap();
    let base = "[init]\ncandidates = [\"{context}/{environment}/bootstrapper\"]\n";

    // `report`: one check (`agent --once`), the drift in the report, nothing changed.
    write(
        site.dir.path(),
        "config.toml",
        format!("{base}[agent]\ninterval = \"30s\"\ndrift_interval = \"2s\"\ndrift = \"report\"\n"),
    );
    site.ok("a", &["agent", "--once"]);
    let last: Value = serde_json::from_slice(&std::fs::read(site.path("a/last-run.json")).unwrap()).unwrap();
    assert_eq!(last["drift"]["changed"], 1, "{last}");
    assert_eq!(
        last["drift"]["tasks"],
        serde_json::json!(["chrony : Install chrony configuration file"]),
        "{last}"
    );
    assert!(last["drift"].get("repaired").is_none(), "{last}");
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), "server evil.example\n");
    let fleet = site.ok("a", &["fleet", "--instances"]);
    assert!(fleet.contains("drift drifted"), "{fleet}");

    // `apply`: the running agent puts it back, as the release's init would, and says so.
    write(
        site.dir.path(),
        "config.toml",
        format!("{base}[agent]\ninterval = \"30s\"\ndrift_interval = \"2s\"\ndrift = \"apply\"\n"),
    );
    let mut agent = site
        .command("a")
        .arg("agent")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while std::fs::read_to_string(&conf).unwrap() != pristine {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(90),
            "not repaired within 90 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // The repair's report is written after the init: wait for it.
    let repaired = loop {
        let last: Value =
            serde_json::from_slice(&std::fs::read(site.path("a/last-run.json")).unwrap()).unwrap();
        if last["drift"]["repaired"] == true || started.elapsed() > std::time::Duration::from_secs(90) {
            break last;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    agent.wait().unwrap();
    assert_eq!(repaired["drift"]["repaired"], true, "{repaired}");
    assert_eq!(repaired["status"], "ok", "{repaired}");
    assert_eq!(repaired["tag"], "v1", "{repaired}");
    assert!(repaired["rolled_back_from"].is_null(), "{repaired}");
    assert_eq!(repaired["init"]["tasks"]["changed"], 1, "{repaired}");
    let fleet = site.ok("a", &["fleet", "--instances"]);
    assert!(fleet.contains("drift repaired"), "{fleet}");
}
