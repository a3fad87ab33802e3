//! `weft-proxy`: read the configuration, start logging, run the proxy until SIGTERM, SIGINT
//! or `POST /shutdown`, drain, exit 0.

use std::process::ExitCode;
use weft_proxy::config::{Config, ProcessEnv};
use weft_proxy::logging::LogHandle;
use weft_proxy::{App, Deps};

/// sysexits: configuration error.
const EX_CONFIG: u8 = 78;
/// sysexits: cannot create (bind) a listener.
const EX_CANTCREAT: u8 = 73;
/// sysexits: internal software error (runtime could not start).
const EX_SOFTWARE: u8 = 70;

fn main() -> ExitCode {
    let config = match Config::from_lookup(&ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("weft-proxy: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let log = match LogHandle::install_global(&config.log_level) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("weft-proxy: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        ?config,
        "starting weft-proxy"
    );
    let runtime = if config.worker_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.worker_threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft-proxy: cannot start the runtime: {e}");
            return ExitCode::from(EX_SOFTWARE);
        }
    };
    runtime.block_on(async move {
        let app = match App::bind(config, Deps::system(Some(log))) {
            Ok(app) => app,
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::from(EX_CANTCREAT);
            }
        };
        let shutdown = app.shutdown_handle();
        tokio::spawn(async move {
            match wait_for_signal().await {
                Ok(name) => tracing::info!("received {name}"),
                Err(e) => tracing::error!("cannot listen for signals: {e}"),
            }
            shutdown.trigger();
        });
        app.run().await;
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => Ok("SIGTERM"),
        _ = int.recv() => Ok("SIGINT"),
    }
}
