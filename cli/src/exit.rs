//! Exit codes shared by `lamina` and `lamctl`, and the mapping from the
//! engine's error kinds to them.

use std::process::ExitCode;

use lamina_engine::ErrorKind;
use lamina_engine::HasKind;

/// Success.
pub const OK: u8 = 0;
/// A failure with no more specific code.
pub const FAILURE: u8 = 1;
/// Invalid command line or argument value.
pub const USAGE: u8 = 2;
/// A disk, snapshot, container or file does not exist.
pub const NOT_FOUND: u8 = 3;
/// On-disk metadata is corrupt.
pub const CORRUPT: u8 = 4;
/// The disk or container is locked, mounted or running.
pub const BUSY: u8 = 5;
/// A system call or device failed.
pub const IO: u8 = 6;
/// The thing to create exists already.
pub const ALREADY_EXISTS: u8 = 7;
/// The request is valid but not supported.
pub const UNSUPPORTED: u8 = 8;
/// `lamina check --repair` found problems and repaired all of them.
pub const CHECK_REPAIRED: u8 = 9;
/// `lamina check` found only problems that `--repair` can fix.
pub const CHECK_REPAIRABLE: u8 = 10;

/// Returns the exit code for an error kind.
pub fn code_for(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::InvalidArgument => USAGE,
        ErrorKind::NotFound => NOT_FOUND,
        ErrorKind::Corrupt => CORRUPT,
        ErrorKind::Busy => BUSY,
        ErrorKind::Io => IO,
        ErrorKind::AlreadyExists => ALREADY_EXISTS,
        ErrorKind::Unsupported => UNSUPPORTED,
    }
}

/// A command-line mistake found after parsing, reported with exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Returns the kind of the first error in the chain whose type the engine
/// defines.
pub fn kind_of(error: &anyhow::Error) -> Option<ErrorKind> {
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<lamina_engine::serve::ServeError>() {
            return Some(e.kind());
        }
        if let Some(e) = cause.downcast_ref::<lamina_engine::image::ImageError>() {
            return Some(e.kind());
        }
        if let Some(e) = cause.downcast_ref::<lamina_engine::image::ops::OpsError>() {
            return Some(e.kind());
        }
        if cause.downcast_ref::<UsageError>().is_some() {
            return Some(ErrorKind::InvalidArgument);
        }
    }
    None
}

/// Prints a failed command's error chain to standard error and returns
/// the process exit code.
pub fn finish(program: &str, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::from(OK),
        Err(error) => {
            eprintln!("{program}: {error:#}");
            ExitCode::from(kind_of(&error).map_or(FAILURE, code_for))
        }
    }
}
