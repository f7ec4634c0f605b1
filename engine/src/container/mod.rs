//! System containers whose root filesystem is a mounted Lamina image.
