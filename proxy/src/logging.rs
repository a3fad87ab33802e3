//! Logging with `tracing`: a plain-text subscriber whose level filter can be changed at
//! runtime through the admin endpoint `PUT /proxy-log-level`.
//!
//! Filters use the `Targets` syntax (`info`, `warn,weft_proxy=debug`), which needs no regex
//! engine and so keeps the binary small.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Registry;

/// Why a log level could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("invalid log level {0:?}: {1}")]
    Parse(String, String),
    #[error("the logging subscriber is gone")]
    Gone,
    #[error("a global logger is already installed")]
    AlreadyInstalled,
}

/// Parses a level filter such as `info` or `warn,weft_proxy=debug`.
pub fn parse_filter(s: &str) -> Result<Targets, String> {
    Targets::from_str(s).map_err(|e| e.to_string())
}

/// Reads and changes the level of a running subscriber.
#[derive(Clone)]
pub struct LogHandle {
    handle: reload::Handle<Targets, Registry>,
    current: Arc<Mutex<String>>,
}

/// The layer a [`LogHandle`] controls; it must be installed (or kept alive) for the handle to work.
pub type FilterLayer = reload::Layer<Targets, Registry>;

impl LogHandle {
    /// A handle plus the filter layer it controls.
    pub fn new(level: &str) -> Result<(Self, FilterLayer), LogError> {
        let filter =
            parse_filter(level).map_err(|e| LogError::Parse(level.to_string(), e.to_string()))?;
        let (layer, handle) = reload::Layer::new(filter);
        let this = LogHandle {
            handle,
            current: Arc::new(Mutex::new(level.to_string())),
        };
        Ok((this, layer))
    }

    /// Installs a global plain-text subscriber on stderr at `level`.
    pub fn install_global(level: &str) -> Result<Self, LogError> {
        let (this, layer) = Self::new(level)?;
        tracing_subscriber::registry()
            .with(layer)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_target(true),
            )
            .try_init()
            .map_err(|_| LogError::AlreadyInstalled)?;
        Ok(this)
    }

    /// The filter currently applied, as it was written.
    pub fn current(&self) -> String {
        match self.current.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Applies a new filter; the old one stays on error.
    pub fn set(&self, level: &str) -> Result<(), LogError> {
        let level = level.trim();
        let filter = parse_filter(level).map_err(|e| LogError::Parse(level.to_string(), e))?;
        self.handle.reload(filter).map_err(|_| LogError::Gone)?;
        match self.current.lock() {
            Ok(mut g) => *g = level.to_string(),
            Err(p) => *p.into_inner() = level.to_string(),
        }
        Ok(())
    }
}
