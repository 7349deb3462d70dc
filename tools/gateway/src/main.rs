//! `jeton-gateway`: see the library documentation and `--help`.

use std::io::IsTerminal;

use clap::Parser;
use jeton_gateway::config::{Cli, Command, Config, ConfigError, LogFormat};
use tokio::sync::mpsc;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The sentence and its causes, without anyhow's debug form (and its backtrace).
            eprintln!("jeton-gateway: {e:#}");
            // As for flags clap refuses: 2 when the configuration cannot work, 1 when the
            // gateway failed running it (a port taken).
            if e.downcast_ref::<ConfigError>().is_some() {
                std::process::ExitCode::from(2)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.command == Some(Command::Migrate) {
        return migrate(&cli);
    }
    let config = Config::resolve(cli)?;
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)?;
    let colours = config.color.colours(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        jeton_gateway::server::run_with_reloads(config, shutdown_signal(), reload_requests()).await
    })?;
    Ok(())
}

/// `jeton-gateway migrate`: the database's tables made or brought to this gateway's version.
fn migrate(cli: &Cli) -> anyhow::Result<()> {
    let url = cli.database_to_migrate()?;
    let migrated = jeton_gateway::store::migrate(&url)?;
    if migrated.from == migrated.to {
        println!(
            "the gateway's tables are up to date (version {})",
            migrated.to
        );
    } else {
        println!(
            "the gateway's tables are at version {} (they were at {})",
            migrated.to, migrated.from
        );
    }
    Ok(())
}

/// One message per SIGHUP: read the authorised tokens file again.
fn reload_requests() -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(1);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hangups) => {
                tokio::spawn(async move {
                    while hangups.recv().await.is_some() {
                        // One reload pending is enough: it reads the file as it is then.
                        let _ = tx.try_send(());
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "SIGHUP cannot be caught: the tokens file is read at start only")
            }
        }
    }
    #[cfg(not(unix))]
    drop(tx);
    rx
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
