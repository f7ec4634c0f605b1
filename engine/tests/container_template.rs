//! Template extraction: what survives (owners, modes, hard links, xattrs,
//! device nodes) in each compression, and which members are rejected.
//! Needs root for chown and mknod.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use lamina_engine::container::template::{self, TemplateError};

/// Builds a source tree with every kind of member extraction must keep.
fn make_source(dir: &Path) {
    fs::create_dir_all(dir.join("etc/sub")).unwrap();
    fs::write(dir.join("etc/owned"), "data").unwrap();
    // chown clears the set-user-ID bit, so it goes first.
    std::os::unix::fs::chown(dir.join("etc/owned"), Some(1234), Some(5678)).unwrap();
    fs::set_permissions(dir.join("etc/owned"), fs::Permissions::from_mode(0o4750)).unwrap();
    fs::hard_link(dir.join("etc/owned"), dir.join("etc/hardlink")).unwrap();
    std::os::unix::fs::symlink("/etc/owned", dir.join("etc/abs-link")).unwrap();
    xattr::set(dir.join("etc/sub"), "user.lamina", b"kept").unwrap();
    xattr::set(dir.join("etc/owned"), "user.lamina", b"file").unwrap();
    // Binary values such as POSIX ACLs may contain newline bytes.
    xattr::set(dir.join("etc/sub"), "user.binary", b"\x02\n\x00\xff").unwrap();

    fs::create_dir(dir.join("dev")).unwrap();
    let status = Command::new("mknod")
        .arg(dir.join("dev/null"))
        .args(["c", "1", "3"])
        .status();
    assert!(status.unwrap().success());
    let status = Command::new("mknod")
        .arg(dir.join("dev/loopish"))
        .args(["b", "7", "200"])
        .status();
    assert!(status.unwrap().success());
    let status = Command::new("mkfifo").arg(dir.join("dev/fifo")).status();
    assert!(status.unwrap().success());
}

fn pack(source: &Path, out: &Path, compress: &str) {
    let mut cmd = Command::new("tar");
    cmd.args([
        "--numeric-owner",
        "--xattrs",
        "--xattrs-include=user.*",
        "-C",
    ])
    .arg(source);
    match compress {
        "gz" => cmd.arg("-czf"),
        "xz" => cmd.arg("-cJf"),
        "zst" => cmd.arg("--zstd").arg("-cf"),
        _ => cmd.arg("-cf"),
    };
    let status = cmd.arg(out).arg(".").status().unwrap();
    assert!(status.success(), "tar failed for {compress}");
}

fn check_tree(root: &Path) {
    let owned = fs::metadata(root.join("etc/owned")).unwrap();
    assert_eq!(owned.uid(), 1234);
    assert_eq!(owned.gid(), 5678);
    assert_eq!(owned.mode() & 0o7777, 0o4750);
    assert_eq!(fs::read_to_string(root.join("etc/owned")).unwrap(), "data");

    let link = fs::metadata(root.join("etc/hardlink")).unwrap();
    assert_eq!(link.ino(), owned.ino(), "hard link became a copy");
    assert_eq!(owned.nlink(), 2);

    let symlink = fs::read_link(root.join("etc/abs-link")).unwrap();
    assert_eq!(symlink, PathBuf::from("/etc/owned"));

    assert_eq!(
        xattr::get(root.join("etc/sub"), "user.lamina").unwrap(),
        Some(b"kept".to_vec())
    );
    assert_eq!(
        xattr::get(root.join("etc/sub"), "user.binary").unwrap(),
        Some(b"\x02\n\x00\xff".to_vec())
    );
    assert_eq!(
        xattr::get(root.join("etc/owned"), "user.lamina").unwrap(),
        Some(b"file".to_vec())
    );

    let null = fs::metadata(root.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    let block = fs::metadata(root.join("dev/loopish")).unwrap();
    assert!(block.file_type().is_block_device());
    assert_eq!(block.rdev(), nix::sys::stat::makedev(7, 200));
    assert!(
        fs::metadata(root.join("dev/fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

#[test]
fn every_compression_keeps_metadata() {
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    make_source(&source);

    for compress in ["gz", "xz", "zst", "tar"] {
        let tarball = work.path().join(format!("t.{compress}"));
        pack(&source, &tarball, compress);
        let root = work.path().join(format!("root-{compress}"));
        fs::create_dir(&root).unwrap();
        template::extract(&tarball, &root).unwrap();
        check_tree(&root);
    }
}

#[test]
fn find_prefers_zst_and_strips_suffix() {
    let cache = tempfile::tempdir().unwrap();
    fs::write(cache.path().join("os.tar.gz"), "").unwrap();
    fs::write(cache.path().join("os.tar.zst"), "").unwrap();
    assert_eq!(
        template::find(cache.path(), "os"),
        Some(cache.path().join("os.tar.zst"))
    );
    assert_eq!(
        template::find(cache.path(), "os.tar.gz"),
        Some(cache.path().join("os.tar.gz"))
    );
    assert_eq!(template::find(cache.path(), "none"), None);
    assert_eq!(template::find(cache.path(), "../os"), None);
    assert_eq!(template::base_name("os.tar.xz"), "os");
}

/// One raw member: the name bytes go into the header untouched, so paths
/// the `tar` builder would refuse can be written.
struct Member<'a> {
    name: &'a str,
    kind: tar::EntryType,
    link: Option<&'a str>,
    data: &'a [u8],
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> Member<'a> {
    Member {
        name,
        kind: tar::EntryType::Regular,
        link: None,
        data,
    }
}

fn write_malicious(path: &Path, members: &[Member<'_>]) {
    let mut builder = tar::Builder::new(fs::File::create(path).unwrap());
    for member in members {
        let mut header = tar::Header::new_gnu();
        let gnu = header.as_gnu_mut().unwrap();
        gnu.name[..member.name.len()].copy_from_slice(member.name.as_bytes());
        if let Some(link) = member.link {
            gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_entry_type(member.kind);
        header.set_mode(0o755);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1);
        header.set_size(member.data.len() as u64);
        header.set_cksum();
        builder.append(&header, member.data).unwrap();
    }
    builder.finish().unwrap();
}

/// Extracts `members` into a fresh root next to a directory that stands
/// for the host, and returns the error and the host directory.
fn extract_malicious(members: &[Member<'_>]) -> (TemplateError, tempfile::TempDir) {
    let work = tempfile::tempdir().unwrap();
    let host = work.path().join("host");
    fs::create_dir(&host).unwrap();
    fs::write(host.join("keep"), "host file").unwrap();
    let root = work.path().join("root");
    fs::create_dir(&root).unwrap();
    let tarball = work.path().join("evil.tar");
    write_malicious(&tarball, members);

    let err = template::extract(&tarball, &root).unwrap_err();
    (err, work)
}

fn host_unchanged(work: &tempfile::TempDir) {
    let host = work.path().join("host");
    let names: Vec<_> = fs::read_dir(&host)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["keep"], "a file appeared outside the root");
    assert_eq!(fs::read_to_string(host.join("keep")).unwrap(), "host file");
    assert!(!work.path().join("evil").exists());
}

#[test]
fn parent_dir_member_is_rejected() {
    let (err, work) = extract_malicious(&[file("./ok", b"x"), file("../evil", b"x")]);
    assert!(
        matches!(&err, TemplateError::ParentMember { member, .. } if member == "../evil"),
        "{err}"
    );
    assert!(err.to_string().contains("../evil"));
    host_unchanged(&work);
}

#[test]
fn nested_parent_dir_is_rejected() {
    let (err, work) = extract_malicious(&[file("a/../../host/keep", b"x")]);
    assert!(matches!(err, TemplateError::ParentMember { .. }), "{err}");
    host_unchanged(&work);
}

#[test]
fn absolute_member_is_rejected() {
    let (err, _work) = extract_malicious(&[file("/tmp/lamina-evil-absolute", b"x")]);
    assert!(
        matches!(&err, TemplateError::AbsoluteMember { member, .. } if member.starts_with("/tmp"))
    );
    assert!(!Path::new("/tmp/lamina-evil-absolute").exists());
}

#[test]
fn write_through_symlink_is_rejected() {
    // The symlink points at the host directory by absolute path.
    let (err, work) = {
        let work = tempfile::tempdir().unwrap();
        let host = work.path().join("host");
        fs::create_dir(&host).unwrap();
        fs::write(host.join("keep"), "host file").unwrap();
        let root = work.path().join("root");
        fs::create_dir(&root).unwrap();
        let tarball = work.path().join("evil.tar");
        let host_text = host.to_str().unwrap().to_string();
        let members = [
            Member {
                name: "escape",
                kind: tar::EntryType::Symlink,
                link: Some(&host_text),
                data: b"",
            },
            file("escape/planted", b"evil"),
        ];
        write_malicious(&tarball, &members);
        (template::extract(&tarball, &root).unwrap_err(), work)
    };
    assert!(
        matches!(&err, TemplateError::ThroughSymlink { member, .. } if member == "escape/planted")
    );
    host_unchanged(&work);
}

#[test]
fn relative_symlink_escape_is_rejected() {
    let members = [
        Member {
            name: "up",
            kind: tar::EntryType::Symlink,
            link: Some("../host"),
            data: b"",
        },
        file("up/keep", b"overwritten"),
    ];
    let (err, work) = extract_malicious(&members);
    assert!(matches!(err, TemplateError::ThroughSymlink { .. }), "{err}");
    host_unchanged(&work);
}

#[test]
fn directory_over_symlink_is_rejected() {
    let members = [
        Member {
            name: "d",
            kind: tar::EntryType::Symlink,
            link: Some("../host"),
            data: b"",
        },
        Member {
            name: "d",
            kind: tar::EntryType::Directory,
            link: None,
            data: b"",
        },
    ];
    let (err, work) = extract_malicious(&members);
    assert!(matches!(err, TemplateError::ThroughSymlink { .. }), "{err}");
    host_unchanged(&work);
    let mode = fs::metadata(work.path().join("host")).unwrap().mode() & 0o777;
    assert_ne!(mode, 0o755 ^ 0o777, "host directory mode changed");
}

#[test]
fn hard_link_outside_is_rejected() {
    let members = [Member {
        name: "hl",
        kind: tar::EntryType::Link,
        link: Some("../host/keep"),
        data: b"",
    }];
    let (err, work) = extract_malicious(&members);
    assert!(matches!(err, TemplateError::ParentMember { .. }), "{err}");
    host_unchanged(&work);
}

#[test]
fn hard_link_through_symlink_is_rejected() {
    let members = [
        Member {
            name: "s",
            kind: tar::EntryType::Symlink,
            link: Some("../host"),
            data: b"",
        },
        Member {
            name: "hl",
            kind: tar::EntryType::Link,
            link: Some("s/keep"),
            data: b"",
        },
    ];
    let (err, work) = extract_malicious(&members);
    assert!(matches!(err, TemplateError::ThroughSymlink { .. }), "{err}");
    host_unchanged(&work);
}

#[test]
fn corrupt_archive_is_a_read_error() {
    let work = tempfile::tempdir().unwrap();
    let tarball = work.path().join("bad.tar.gz");
    fs::write(&tarball, [0x1f, 0x8b, 0, 1, 2, 3, 4, 5]).unwrap();
    let root = work.path().join("root");
    fs::create_dir(&root).unwrap();
    let err = template::extract(&tarball, &root).unwrap_err();
    assert!(matches!(err, TemplateError::Read { .. }), "{err}");
}
