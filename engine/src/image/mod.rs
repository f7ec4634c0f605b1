//! Layered block images: delta files chained into a disk, read and written with copy-on-write.
