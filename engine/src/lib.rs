//! The Lamina engine: layered block images (`image`), the server that
//! exposes a mounted image to the kernel (`serve`), and system containers
//! whose root is a mounted image (`container`).

pub mod container;
pub mod error;
pub mod image;
pub mod serve;

pub use error::{ErrorKind, HasKind};
