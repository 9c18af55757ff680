//! The test suite's IMDS emulator as a standalone server on loopback, for trying
//! `bootlace identity` by hand and for benchmarks:
//!
//! ```sh
//! cargo run --example imds_emulator -- [USER_DATA_FILE] [--disabled]
//! AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:PORT bootlace identity
//! ```
//!
//! It prints the endpoint on its first line and serves until stdin closes.

#[allow(dead_code)]
#[path = "../tests/support/imds.rs"]
mod imds;

use std::io::Read;

fn main() {
    let mut options = imds::Options::default();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--disabled" => options.disabled = true,
            "--optional-tokens" => options.tokens = imds::Tokens::Optional,
            path => options.user_data = Some(std::fs::read(path).expect("reading the user-data file")),
        }
    }
    let server = imds::Imds::start(options);
    println!("{}", server.endpoint());
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    eprintln!("served {} requests", server.seen().len());
}
