//! The FUSE + loop path with a raw file backend, in process: attach,
//! mkfs, mount, concurrent large direct writes (case C1), read back.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use lamina_engine::serve::{Attachment, FsType, RawFile, fs};

const MIB: u64 = 1 << 20;

/// Unmounts a filesystem on drop, so a failing test leaves no mount.
struct MountGuard(PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        if fs::unmount(&self.0, false).is_err() {
            let _ = fs::unmount(&self.0, true);
        }
    }
}

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} did not start: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn attach_raw(dir: &Path, size: u64) -> Attachment {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let raw = RawFile::create(&dir.join("raw.img"), size).expect("create raw file");
    Attachment::attach(Arc::new(raw), &dir.join("export"), false).expect("attach")
}

/// Builds `len` bytes that differ per writer and per 512-byte sector, so
/// that a payload written at the wrong offset or by the wrong request
/// shows up on compare.
fn pattern(seed: u8, len: u64) -> Vec<u8> {
    (0..len)
        .map(|i| {
            let sector = u8::try_from(i / 512 % 256).unwrap();
            let within = u8::try_from(i % 251).unwrap();
            seed.wrapping_mul(31)
                .wrapping_add(sector)
                .wrapping_add(within)
        })
        .collect()
}

fn dd(args: &[String]) -> Vec<u8> {
    let output = Command::new("dd")
        .args(args)
        .arg("status=none")
        .output()
        .expect("run dd");
    assert!(
        output.status.success(),
        "dd {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Case C1 on the bare loop device: four 4 MiB direct writes at once, with
/// 1 MiB and 4 MiB blocks, at offsets aligned and not aligned to 1 MiB.
#[test]
fn raw_device_concurrent_direct_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let attachment = attach_raw(dir.path(), 128 * MIB);
    let device = attachment.device().display().to_string();
    let cases: [(u8, &str, u64); 4] = [
        (1, "1M", 0),
        (2, "4M", 8 * MIB),
        (3, "1M", 16 * MIB + 12 * 1024),
        (4, "4M", 24 * MIB + 516 * 1024),
    ];

    let mut children = Vec::new();
    for (seed, block, offset) in cases {
        let input = dir.path().join(format!("pattern-{seed}"));
        std::fs::write(&input, pattern(seed, 4 * MIB)).expect("write pattern");
        let child = Command::new("dd")
            .arg(format!("if={}", input.display()))
            .arg(format!("of={device}"))
            .arg(format!("bs={block}"))
            .arg(format!("seek={offset}"))
            .args([
                "oflag=direct,seek_bytes",
                "conv=notrunc,fsync",
                "status=none",
            ])
            .spawn()
            .expect("start dd");
        children.push(child);
    }
    for mut child in children {
        assert!(child.wait().expect("wait dd").success(), "dd write failed");
    }

    for (seed, _, offset) in cases {
        let read = dd(&[
            format!("if={device}"),
            format!("skip={offset}"),
            "bs=1M".into(),
            "count=4".into(),
            "iflag=direct,skip_bytes".into(),
        ]);
        assert!(
            read == pattern(seed, 4 * MIB),
            "pattern {seed} at {offset} differs on the device"
        );
    }
    attachment.detach(Duration::from_secs(10)).expect("detach");

    let raw = std::fs::read(dir.path().join("raw.img")).expect("read raw file");
    for (seed, _, offset) in cases {
        let start = usize::try_from(offset).unwrap();
        let written = &raw[start..start + usize::try_from(4 * MIB).unwrap()];
        assert!(
            written == pattern(seed, 4 * MIB),
            "pattern {seed} at {offset} differs in the file"
        );
    }
}

#[test]
fn raw_file_served_mkfs_and_mounted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let attachment = attach_raw(dir.path(), 256 * MIB);
    let device = attachment.device().to_path_buf();
    assert!(
        device.to_string_lossy().starts_with("/dev/loop"),
        "device {device:?}"
    );

    fs::mkfs(&device, FsType::Ext4, None).expect("mkfs");
    assert_eq!(fs::detect(&device).expect("detect"), Some(FsType::Ext4));

    let target = dir.path().join("mnt");
    std::fs::create_dir(&target).expect("mkdir");
    fs::mount(&device, &target, FsType::Ext4, false, None).expect("mount");
    let guard = MountGuard(target.clone());
    let data = pattern(7, 3 * MIB);
    std::fs::write(target.join("file"), &data).expect("write file");
    run("sync", &[]);
    drop(guard);

    let output = Command::new("e2fsck")
        .args(["-fn"])
        .arg(&device)
        .output()
        .expect("e2fsck");
    assert!(
        output.status.success(),
        "e2fsck: {}",
        String::from_utf8_lossy(&output.stdout)
    );

    fs::mount(&device, &target, FsType::Ext4, true, None).expect("mount again");
    let guard = MountGuard(target.clone());
    assert!(
        std::fs::read(target.join("file")).expect("read file") == data,
        "file differs after remount"
    );
    drop(guard);

    attachment.detach(Duration::from_secs(10)).expect("detach");
    assert!(!dir.path().join("export").exists(), "FUSE file left behind");
}
