//! A small logger: one line per event to stderr or a file, at the configured
//! level. The module never installs a global logger of the host process, and
//! never logs key material, PINs or API keys.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

use parking_lot::Mutex;

/// Log levels, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Off = 0,
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
}

impl Level {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "off" | "none" => Level::Off,
            "error" => Level::Error,
            "warn" | "warning" => Level::Warn,
            "info" => Level::Info,
            "debug" | "trace" => Level::Debug,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Level::Off => "OFF",
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
        }
    }
}

// Before C_Initialize has read a configuration, errors (a bad configuration)
// still go to stderr.
static LEVEL: AtomicU8 = AtomicU8::new(Level::Warn as u8);
static FILE: Mutex<Option<std::fs::File>> = Mutex::new(None);

/// Sets the level and the destination (`None`: stderr). A file that cannot be
/// opened is reported on stderr and logging stays on stderr.
pub fn configure(level: Level, file: Option<&std::path::Path>) {
    LEVEL.store(level as u8, Ordering::Relaxed);
    let mut f = FILE.lock();
    *f = None;
    if let Some(p) = file {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
        {
            Ok(h) => *f = Some(h),
            Err(e) => eprintln!(
                "kms-pkcs11 ERROR: cannot open log file {}: {e}; logging to stderr",
                p.display()
            ),
        }
    }
}

/// Whether events at `level` are written.
pub fn enabled(level: Level) -> bool {
    level != Level::Off && level as u8 <= LEVEL.load(Ordering::Relaxed)
}

/// Writes one event (use the [`crate::log!`] macro).
pub fn write(level: Level, msg: std::fmt::Arguments<'_>) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let line = format!(
        "{}.{:03} kms-pkcs11[{}] {}: {msg}\n",
        now.as_secs(),
        now.subsec_millis(),
        std::process::id(),
        level.name()
    );
    let mut f = FILE.lock();
    match f.as_mut() {
        Some(file) => {
            let _ = file.write_all(line.as_bytes());
        }
        None => {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
}

/// `log!(Level::Warn, "format {}", args)`.
#[macro_export]
macro_rules! log {
    ($level:expr, $($arg:tt)*) => {
        if $crate::log::enabled($level) {
            $crate::log::write($level, format_args!($($arg)*));
        }
    };
}
