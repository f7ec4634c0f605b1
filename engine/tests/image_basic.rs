//! Read-after-write, reopen and copy-on-write through the public API on
//! real files.

use lamina_engine::image::{Access, CreateOptions, Disk};

#[test]
fn write_then_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("disk");
    let opts = CreateOptions {
        size: 64 << 20,
        cluster_size: 1 << 20,
    };
    Disk::create(&dir, &opts).unwrap();
    let disk = Disk::open(&dir, Access::ReadWrite).unwrap();
    disk.write_at(b"hello", 1_048_570).unwrap();
    let mut buf = [0u8; 7];
    disk.read_at(&mut buf, 1_048_569).unwrap();
    assert_eq!(&buf, b"\0hello\0");
    disk.close().unwrap();
}
