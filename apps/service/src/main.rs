//! `holdfast`: the command line. Each subcommand's work lives in the library.

use clap::{Parser, Subcommand};

/// holdfast: a PostgreSQL access layer that keeps working through connection faults.
#[derive(Debug, Parser)]
#[command(name = "holdfast", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Play the incident's smoke test against a throwaway database with faults, and report.
    Demo(holdfast_service::demo::DemoArgs),
    /// Drive the service with assemblies, API clients and a fault plan; check and report.
    Load(holdfast_service::load::LoadArgs),
    /// Run the episode-assembly service: HTTP API and assembly workers.
    Serve(holdfast_service::config::ServeArgs),
    /// Run the fault-injection proxy with an HTTP+JSON control port.
    Faults(holdfast_service::fault_control::Args),
}

fn main() -> std::process::ExitCode {
    holdfast_service::logging::init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("holdfast: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Command::Demo(args) = cli.command {
        return match runtime.block_on(holdfast_service::demo::run(args)) {
            Ok(report) => {
                print!("{}", report.render());
                if report.passed() {
                    std::process::ExitCode::SUCCESS
                } else {
                    std::process::ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("holdfast demo: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if let Command::Load(args) = cli.command {
        let report_path = args.report.clone();
        return match runtime.block_on(holdfast_service::load::run(args)) {
            Ok(report) => {
                print!("{}", report.render_text());
                println!(
                    "report: {} (data: {})",
                    report_path.display(),
                    report_path.with_extension("json").display()
                );
                if report.passed {
                    std::process::ExitCode::SUCCESS
                } else {
                    std::process::ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("holdfast load: {e}");
                std::process::ExitCode::from(2)
            }
        };
    }
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo(_) | Command::Load(_) => Ok(()),
            Command::Serve(args) => holdfast_service::serve::run(args, shutdown_signal()).await,
            Command::Faults(args) => holdfast_service::fault_control::run(args, shutdown_signal()).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("holdfast: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}
