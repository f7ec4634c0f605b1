//! Shared pieces of the `lamina` and `lamctl` command-line tools: argument
//! types, output formatting and exit codes.

pub mod exit;
pub mod lamctl;
pub mod lamina;
pub mod pipe;
pub mod size;
pub mod table;
