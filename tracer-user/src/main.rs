//! The `crashtrace` command: parse arguments, run the subcommand, map
//! failures to exit statuses.

use std::process::ExitCode;

use clap::Parser as _;
use crashtrace::{
    frontends::{
        cli::{Cli, Command},
        commands, daemon, doctor, goroutines, queries, symbolize_cmd,
    },
    loader::{self, kernel_support},
};

/// Exit status when the environment cannot run crashtrace at all.
const EXIT_ENVIRONMENT: u8 = 4;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("crashtrace: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Record(args) => commands::record(args).await,
            Command::Watch(args) => commands::watch(args).await,
            Command::Symbolize(args) => symbolize_cmd::run(args),
            Command::Daemon(args) => daemon::run(args).await,
            Command::List(args) => queries::list(args),
            Command::Show(args) => queries::show(args),
            Command::Groups(args) => queries::groups(args),
            Command::Stats(args) => queries::stats(args),
            Command::Import(args) => queries::import(args),
            Command::Doctor(args) => doctor::run(args),
            Command::Goroutines(args) => goroutines::run(args),
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("crashtrace: error: {e:#}");
            // A verifier log names a helper the kernel lacks by number only.
            let missing = e.chain().find_map(|c| match c.downcast_ref() {
                Some(loader::LoadError::Probe { reason, .. }) => {
                    kernel_support::missing_helper(reason)
                }
                _ => None,
            });
            if let Some(helper) = missing {
                eprintln!("crashtrace: {}", kernel_support::explain(helper));
            }
            let environment = missing.is_some()
                || e.chain().any(|c| {
                    matches!(
                        c.downcast_ref::<loader::LoadError>(),
                        Some(
                            loader::LoadError::NotPrivileged
                                | loader::LoadError::Offsets(_)
                                | loader::LoadError::Probe { .. }
                        )
                    )
                });
            ExitCode::from(if environment { EXIT_ENVIRONMENT } else { 1 })
        }
    }
}
