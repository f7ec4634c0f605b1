//! The `lamina` verbs, one module per verb: each parses its arguments and
//! calls the engine.

pub mod list;
pub mod mount;
pub mod nbd;
pub mod umount;
