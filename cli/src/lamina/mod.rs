//! The `lamina` verbs, one module per verb: each parses its arguments and
//! calls the engine.

pub mod check;
pub mod compact;
pub mod convert;
pub mod info;
pub mod init;
pub mod list;
pub mod mount;
pub mod nbd;
pub mod read;
pub mod resize;
pub mod route;
pub mod snapshot;
pub mod snapshot_delete;
pub mod snapshot_list;
pub mod snapshot_merge;
pub mod snapshot_switch;
pub mod umount;
pub mod write;
