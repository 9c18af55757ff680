//! `bootlace identity`: print who this instance is.

use super::{GlobalArgs, print_json, runtime};
use crate::error::Exit;
use crate::identity;

pub fn run(global: &GlobalArgs) -> anyhow::Result<Exit> {
    let config = global.settings()?;
    let identity = runtime()?.block_on(identity::resolve(&config.identity, &config.identity.source))?;
    if global.json {
        print_json(&identity)?;
    } else {
        outln!("{}", identity.to_text().trim_end());
    }
    Ok(Exit::Ok)
}
