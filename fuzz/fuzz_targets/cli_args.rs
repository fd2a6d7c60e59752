//! The command line's argument handling on arbitrary arguments: clap's parsing, then every
//! check made before a device is opened. Errors are fine; panics are not.
#![no_main]

use clap::Parser;
use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../cli/src/commands/mod.rs"]
mod cli;

fuzz_target!(|data: &[u8]| {
    // Arguments separated by NUL bytes, as a shell would hand them over.
    let text = String::from_utf8_lossy(data);
    let args = std::iter::once("wgpu-loss").chain(text.split('\0'));
    if let Ok(parsed) = cli::Cli::try_parse_from(args) {
        let _ = parsed.check();
    }
});
