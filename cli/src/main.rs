//! The `wgpu-loss` command-line tool.

mod commands;

use clap::Parser;

fn main() -> std::process::ExitCode {
    match commands::Cli::parse().run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
