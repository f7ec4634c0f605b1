//! Every bad input to `lamctl` fails with vzctl's exit code and leaves the
//! home exactly as it was: no container, image, mount or loop device.
//! Runs as root (images are mounted through FUSE and loop devices).

#[path = "lamctl_common.rs"]
mod common;

use std::fs;

use common::Home;

/// Runs a failing command and checks its code and that nothing changed.
fn fails_without_change(home: &Home, args: &[&str], code: i32) -> String {
    let before = home.files();
    let (actual, stderr) = home.fails(args);
    assert_eq!(actual, code, "lamctl {args:?}: {stderr}");
    assert_eq!(home.files(), before, "lamctl {args:?} changed the home");
    home.assert_clean();
    stderr
}

#[test]
fn unknown_template_is_91() {
    let home = Home::new();
    let stderr = fails_without_change(&home, &["create", "101", "--ostemplate", "nosuch"], 91);
    assert!(stderr.contains("nosuch"), "{stderr}");
    assert!(!home.path().join("conf/101.conf").exists());
}

#[test]
fn bad_ctid_is_21() {
    let home = Home::new();
    for ctid in ["abc", "0", "2147483645", "1x"] {
        fails_without_change(&home, &["create", ctid, "--ostemplate", "busybox"], 21);
    }
    fails_without_change(&home, &["start", "no-such-name"], 21);
}

#[test]
fn bad_size_is_21() {
    let home = Home::new();
    let args = [
        "create",
        "101",
        "--ostemplate",
        "busybox",
        "--diskspace",
        "10Q",
    ];
    let stderr = fails_without_change(&home, &args, 21);
    assert!(stderr.contains("10Q"), "{stderr}");
    assert!(!stderr.contains("Creation of"), "{stderr}");
    // Arguments are checked before create prints its first message.
    let output = home.lamctl(&args);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "");
}

#[test]
fn create_without_template_is_29() {
    let home = Home::new();
    let args = ["create", "101", "--diskspace", "256M"];
    let stderr = fails_without_change(&home, &args, 29);
    assert!(stderr.contains("--ostemplate"), "{stderr}");
    assert!(stderr.contains("DEF_OSTEMPLATE"), "{stderr}");
    let output = home.lamctl(&args);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "");
}

#[test]
fn zero_ram_is_21() {
    let home = Home::new();
    home.create("101", &[]);
    let stderr = fails_without_change(&home, &["set", "101", "--ram", "0", "--save"], 21);
    assert!(stderr.contains("--ram"), "{stderr}");
}

#[test]
fn list_unknown_field_names_option() {
    let home = Home::new();
    let args = ["list", "-a", "-o", "ctid", "-s", "nosuch"];
    let stderr = fails_without_change(&home, &args, 21);
    assert!(stderr.contains("Invalid value for -s"), "{stderr}");
    let stderr = fails_without_change(&home, &["list", "-a", "-o", "nosuch"], 21);
    assert!(stderr.contains("Invalid value for -o"), "{stderr}");
}

#[test]
fn list_of_unknown_ctids() {
    let home = Home::new();
    home.create("101", &[]);
    // vzlist: none of the given containers exists.
    let output = home.lamctl(&["list", "-a", "999"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "Container(s) not found\n"
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "");
    // One of them exists: list it, as vzlist does.
    let listed = home.ok(&["list", "-a", "-H", "-o", "ctid", "999", "101"]);
    assert_eq!(listed.trim(), "101");
    // An existing but stopped container without -a is no error.
    assert_eq!(home.ok(&["list", "-H", "101"]), "");
    fails_without_change(&home, &["list", "-a", "abc"], 21);
}

#[test]
fn unknown_sample_is_82() {
    let home = Home::new();
    let args = [
        "create",
        "101",
        "--ostemplate",
        "busybox",
        "--config",
        "nosuch",
    ];
    fails_without_change(&home, &args, 82);
}

#[test]
fn missing_diskinodes_value_is_21() {
    let home = Home::new();
    let args = [
        "create",
        "101",
        "--ostemplate",
        "busybox",
        "--diskinodes",
        "1K",
    ];
    fails_without_change(&home, &args, 21);
}

#[test]
fn bad_hostname_is_70() {
    let home = Home::new();
    let args = [
        "create",
        "101",
        "--ostemplate",
        "busybox",
        "--hostname",
        "bad_host!",
    ];
    fails_without_change(&home, &args, 70);
}

#[test]
fn unknown_command_is_20() {
    let home = Home::new();
    fails_without_change(&home, &["frobnicate", "101"], 20);
    fails_without_change(&home, &["create"], 20);
}

#[test]
fn existing_ctid_is_44() {
    let home = Home::new();
    home.create("101", &[]);
    let config = fs::read(home.path().join("conf/101.conf")).unwrap();
    let descriptor = fs::read(home.path().join("private/101/root.hdd/disk.json")).unwrap();

    fails_without_change(&home, &["create", "101", "--ostemplate", "busybox"], 44);
    assert_eq!(fs::read(home.path().join("conf/101.conf")).unwrap(), config);
    let after = fs::read(home.path().join("private/101/root.hdd/disk.json")).unwrap();
    assert_eq!(after, descriptor);

    // --config with an existing config is vzctl's config copy error.
    let args = [
        "create",
        "101",
        "--ostemplate",
        "busybox",
        "--config",
        "basic",
    ];
    fails_without_change(&home, &args, 82);
}

#[test]
fn missing_config_is_14() {
    let home = Home::new();
    fails_without_change(&home, &["start", "101"], 14);
    fails_without_change(&home, &["destroy", "101"], 14);
}

#[test]
fn stop_of_stopped_exits_0() {
    let home = Home::new();
    home.create("101", &[]);
    let before = home.files();
    let output = home.lamctl(&["stop", "101"]);
    assert_eq!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not running"), "{stderr}");
    assert_eq!(home.files(), before);
}

#[test]
fn destroy_of_mounted_is_41() {
    let home = Home::new();
    home.create("101", &[]);
    home.ok(&["mount", "101"]);
    let (code, stderr) = home.fails(&["destroy", "101"]);
    assert_eq!(code, 41, "{stderr}");
    assert!(home.path().join("private/101/root.hdd").is_dir());
    assert!(home.ok(&["status", "101"]).contains("exist mounted"));
    home.ok(&["umount", "101"]);
}

#[test]
fn umount_of_unmounted_is_40() {
    let home = Home::new();
    home.create("101", &[]);
    fails_without_change(&home, &["umount", "101"], 40);
}

#[test]
fn private_outside_area_is_85() {
    let home = Home::new();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("keep"), "host").unwrap();
    fs::create_dir_all(home.path().join("conf")).unwrap();
    let config = format!(
        "VE_PRIVATE=\"{}\"\nOSTEMPLATE=\"busybox\"\n",
        outside.path().display()
    );
    fs::write(home.path().join("conf/102.conf"), config).unwrap();

    for args in [
        &[
            "create",
            "102",
            "--ostemplate",
            "busybox",
            "--diskspace",
            "256M",
        ][..],
        &["mount", "102"],
        &["start", "102"],
        &["destroy", "102"],
        &["snapshot", "102"],
    ] {
        fails_without_change(&home, args, 85);
    }
    assert_eq!(
        fs::read_to_string(outside.path().join("keep")).unwrap(),
        "host"
    );
    let names: Vec<_> = fs::read_dir(outside.path()).unwrap().collect();
    assert_eq!(names.len(), 1);
}

#[test]
fn malicious_template_leaves_nothing() {
    let home = Home::new();
    let cache = home.path().join("template/cache");
    let tarball = cache.join("evil.tar");
    let mut builder = tar::Builder::new(fs::File::create(&tarball).unwrap());
    let mut header = tar::Header::new_gnu();
    let name = b"../escaped";
    header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1);
    header.set_size(4);
    header.set_cksum();
    builder.append(&header, &b"evil"[..]).unwrap();
    builder.finish().unwrap();
    drop(builder);

    let args = [
        "create",
        "103",
        "--ostemplate",
        "evil",
        "--diskspace",
        "256M",
    ];
    let stderr = fails_without_change(&home, &args, 48);
    assert!(stderr.contains("../escaped"), "{stderr}");
    assert!(!home.path().join("private/103").exists());
    assert!(!home.path().join("private/103.tmp").exists());
    assert!(!home.path().join("root/103").exists());
    assert!(!home.path().join("root/escaped").exists());
}

#[test]
fn lock_live_9_dead_taken_over() {
    let home = Home::new();
    fs::create_dir_all(home.path().join("lock")).unwrap();
    let lock = home.path().join("lock/101.lck");
    let mut sleeper = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    fs::write(&lock, format!("{}\n", sleeper.id())).unwrap();

    let args = [
        "create",
        "101",
        "--ostemplate",
        "busybox",
        "--diskspace",
        "256M",
    ];
    let (code, stderr) = home.fails(&args);
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    assert_eq!(code, 9, "{stderr}");
    assert!(!home.path().join("private/101").exists());

    // The owner is dead now: the next command takes the lock over.
    home.ok(&args);
    assert!(!lock.exists(), "lock not released");
}

#[test]
fn duplicate_name_is_131() {
    let home = Home::new();
    home.create("101", &["--name", "web"]);
    assert!(home.ok(&["status", "web"]).starts_with("CTID 101 exist"));

    let args = [
        "create",
        "102",
        "--ostemplate",
        "busybox",
        "--diskspace",
        "256M",
        "--name",
        "web",
    ];
    fails_without_change(&home, &args, 131);
}

/// Writes a gzip template of `files` files of 32 KiB each, large enough
/// that extracting it takes a while.
fn write_big_template(path: &std::path::Path, files: usize) {
    let file = fs::File::create(path).unwrap();
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    let mut data = vec![0u8; 32 * 1024];
    for i in 0..files {
        data[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let mut header = tar::Header::new_gnu();
        header.set_path(format!("data/f{i}")).unwrap();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append(&header, &data[..]).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap();
}

#[test]
fn interrupted_create_leaves_nothing() {
    let home = Home::new();
    write_big_template(&home.path().join("template/cache/big.tar.gz"), 6000);
    let before = home.files();

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lamctl"))
        .args(["create", "104", "--ostemplate", "big", "--diskspace", "1G"])
        .env("LAMINA_HOME", home.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    // Interrupt once the image is mounted, that is during extraction.
    let root = home.path().join("root/104");
    while child.try_wait().unwrap().is_none() && !home.mounts().contains(&root) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);

    if output.status.code() == Some(0) {
        // The signal came after the last step: a complete container.
        eprintln!("NOTE: create finished before the signal arrived");
        assert!(home.path().join("private/104/root.hdd").is_dir());
        assert!(home.path().join("conf/104.conf").is_file());
    } else {
        assert_eq!(output.status.code(), Some(48), "{stderr}");
        assert!(stderr.contains("cancelled"), "{stderr}");
        assert_eq!(home.files(), before, "the cancelled create left files");
        home.assert_clean();
    }
}
