//! Unit tests of the runtime with a fake cgroup tree and recorded syscalls.
