//! `bootlace demo`: the flow on a simulated instance in a fresh temp dir, with nothing
//! but the binary. For now it shows the identity step on the sample user-data shipped in
//! `examples/`; later steps join as they are built.

use super::{GlobalArgs, print_json, runtime};
use crate::config::IdentityConfig;
use crate::exit::Exit;
use crate::identity::{self, SourceSpec};

const SAMPLE_USER_DATA: &str = include_str!("../../examples/user-data");

pub fn run(global: &GlobalArgs) -> anyhow::Result<Exit> {
    let dir = tempfile::Builder::new().prefix("bootlace-demo-").tempdir()?;
    let user_data = dir.path().join("user-data");
    std::fs::write(&user_data, SAMPLE_USER_DATA)?;
    let say = |line: &str| {
        if !global.json {
            println!("{line}");
        }
    };
    say(&format!("bootlace demo in {}", dir.path().display()));
    say(&format!(
        "\n== identity: a simulated instance reads its user-data from {}",
        user_data.display()
    ));
    for line in SAMPLE_USER_DATA.lines() {
        say(&format!("   | {line}"));
    }
    let source = SourceSpec::File(user_data);
    let identity = runtime()?.block_on(identity::resolve(&IdentityConfig::default(), &source))?;
    if global.json {
        print_json(&identity)?;
    } else {
        say("\n== resolved identity (what `bootlace identity` prints)");
        print!("{}", identity.to_text());
        say("\ndemo finished: identity resolved");
    }
    Ok(Exit::Ok)
}
