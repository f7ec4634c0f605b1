//! On-disk layouts of Lamina images: the delta header, the block allocation
//! table (BAT) and the disk descriptor. Parsing, validation and serialization
//! only; no I/O policy. `docs/format.md` describes the byte layout.

pub mod bat;
pub mod descriptor;
pub mod error;
pub mod header;

pub use bat::{BAT_PAGE_SIZE, BatEntry, BatPage, ENTRIES_PER_PAGE, EntryChecker};
pub use descriptor::{Descriptor, DescriptorError, Node};
pub use error::FormatError;
pub use header::{DEFAULT_CLUSTER_SIZE, Geometry, Header};

#[cfg(test)]
mod tests;
