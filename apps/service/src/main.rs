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
    /// A short load run with a kill and a restart: `holdfast load`'s preset for a first look.
    Demo(holdfast_service::harness::demo::DemoArgs),
    /// Drive the service with assemblies, API clients and a fault plan; check and report.
    Load(holdfast_service::harness::load::LoadArgs),
    /// Run the episode-assembly service: HTTP API and assembly workers.
    Serve(holdfast_service::service::config::ServeArgs),
    /// Run the fault-injection proxy with an HTTP+JSON control port.
    Faults(holdfast_service::harness::fault_control::Args),
    /// Look at and act on the task queue on DATABASE_URL: list, show, retry, cancel,
    /// delete, prune, stats.
    Tasks(holdfast_service::tasks_cli::TasksArgs),
}

fn main() -> std::process::ExitCode {
    let exporter = match holdfast_service::logging::init() {
        Ok(exporter) => exporter,
        Err(e) => {
            eprintln!("holdfast: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let code = run(Cli::parse());
    if let Some(exporter) = exporter {
        exporter.shutdown();
    }
    code
}

fn run(cli: Cli) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("holdfast: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let (report_path, name, run) = match cli.command {
        Command::Demo(args) => (args.report.clone(), "demo", Run::Demo(args)),
        Command::Load(args) => (args.report.clone(), "load", Run::Load(args)),
        Command::Serve(args) => {
            let served = runtime.block_on(holdfast_service::service::serve::run(args, shutdown_signal()));
            return exit(served);
        }
        Command::Tasks(args) => {
            return match runtime.block_on(holdfast_service::tasks_cli::run(args)) {
                Ok(text) => {
                    print!("{text}");
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => exit(Err(e)),
            };
        }
        Command::Faults(args) => {
            let ran = runtime.block_on(holdfast_service::harness::fault_control::run(
                args,
                shutdown_signal(),
            ));
            return exit(ran);
        }
    };
    let result = runtime.block_on(async {
        match run {
            Run::Demo(args) => holdfast_service::harness::demo::run(args).await,
            Run::Load(args) => holdfast_service::harness::load::run(args).await,
        }
    });
    match result {
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
            eprintln!("holdfast {name}: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

/// The exit code of `serve` or `faults`.
fn exit(result: Result<(), holdfast_service::error::ServiceError>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("holdfast: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A load run, or the demo's preset of one.
enum Run {
    Demo(holdfast_service::harness::demo::DemoArgs),
    Load(holdfast_service::harness::load::LoadArgs),
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
