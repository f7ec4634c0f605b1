//! Layered block images: delta files chained into a disk, read and written
//! with copy-on-write.
//!
//! A disk is a directory holding a descriptor (`disk.json`), one delta file
//! per layer and a lock file. [`Disk`] opens the chain from the base to the
//! writable top and serves positional I/O through one merged cluster map.
//! Every file access goes through [`io::Storage`], so crash tests can run
//! the same code on the fault-injecting [`memfs::MemStorage`].

pub mod check;
pub mod convert;
pub mod delta;
mod disk;
pub mod error;
pub mod io;
pub mod map;
pub mod memfs;
mod online;
pub mod ops;
mod remove;
mod repair;
mod rw;
pub mod store;
mod tree;

pub use disk::{Access, CreateOptions, DeltaInfo, Disk, DiskInfo, SnapshotInfo, resolve_snapshot};
pub use error::ImageError;
