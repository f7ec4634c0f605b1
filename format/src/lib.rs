//! On-disk layouts of Lamina images: the delta header, the block allocation
//! table (BAT) and the disk descriptor. Parsing, validation and serialization
//! only; no I/O policy.
