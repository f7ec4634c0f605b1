//! The server process that owns a mounted image: FUSE file, loop device, control socket, NBD export.
