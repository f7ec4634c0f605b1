//! Shared pieces of the `lamina` and `lamctl` command-line tools: argument
//! types, output formatting and exit codes.
