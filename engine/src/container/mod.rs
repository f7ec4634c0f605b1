//! System containers whose root filesystem is a mounted Lamina image.
//!
//! The vzctl-style pieces live here: the layout and config files, CTIDs and
//! names, locks, templates, and the operations behind `lamctl`. The
//! namespace and cgroup runtime is in `runtime`.

pub mod backend;
pub mod config;
pub mod create;
pub mod ctid;
pub mod error;
pub mod exec;
pub mod instance;
pub mod layout;
pub mod lifecycle;
pub mod list;
pub mod lock;
pub mod mounts;
pub mod net;
pub mod resources;
pub mod rootfs;
pub mod runtime;
pub mod samples;
pub mod set;
pub mod snapshot;
pub mod template;
pub mod units;
pub mod xattrs;

pub use error::{ContainerError, Stage};
