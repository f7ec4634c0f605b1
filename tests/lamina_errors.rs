//! Bad input to `lamina`: invalid sizes, corrupt images and the exit
//! codes of `check`. No case may panic or leave a disk behind.

mod lamina_common;

use lamina_common::{Home, code, delta_files, flip_byte, pattern};

#[test]
fn bad_sizes_exit_usage_without_disk() {
    let home = Home::new();
    let disk = home.join("d");
    for size in [
        "10Q",
        "-1",
        "1.5G",
        "",
        "G",
        "10GB",
        "18446744073709551616",
        "16777216T",
    ] {
        let stderr = home.fails(&["init", &disk, "--size", size], code::USAGE);
        assert!(
            stderr.contains(&format!("{size:?}")),
            "size {size:?}: {stderr}"
        );
        let stderr = home.fails(&["init", &disk, &format!("--size={size}")], code::USAGE);
        assert!(
            stderr.contains(&format!("{size:?}")),
            "size {size:?}: {stderr}"
        );
        assert!(!home.path().join("d").exists(), "disk created for {size:?}");
    }
    let stderr = home.fails(
        &["init", &disk, "--size", "1G", "--cluster-size", "10Q"],
        code::USAGE,
    );
    assert!(stderr.contains("10Q"), "{stderr}");
    assert!(!home.path().join("d").exists());
}

#[test]
fn bad_geometry_exits_usage_without_disk() {
    let home = Home::new();
    let disk = home.join("d");
    for (size, cluster) in [("1000", "1M"), ("1G", "3M"), ("1G", "32K"), ("1G", "32M")] {
        home.fails(
            &[
                "init",
                &disk,
                "--size",
                size,
                "--cluster-size",
                cluster,
                "--fs",
                "none",
            ],
            code::USAGE,
        );
        assert!(
            !home.path().join("d").exists(),
            "disk created for {size}/{cluster}"
        );
    }
}

#[test]
fn bad_offsets_exit_usage() {
    let home = Home::new();
    let disk = home.disk("d", "8M");
    let input = home.file("in", b"abc");
    home.fails(
        &["write", &disk, "--offset", "1x", "--input", &input],
        code::USAGE,
    );
    home.fails(
        &["read", &disk, "--offset", "0", "--length", "-5"],
        code::USAGE,
    );
    home.fails(&["resize", &disk, "--size", "2.5G"], code::USAGE);
}

#[test]
fn init_inodes_needs_ext4() {
    let home = Home::new();
    let disk = home.join("d");
    home.fails(
        &[
            "init", &disk, "--size", "64M", "--fs", "none", "--inodes", "100",
        ],
        code::USAGE,
    );
    home.fails(
        &["init", &disk, "--size", "64M", "--fs", "btrfs"],
        code::USAGE,
    );
    assert!(!home.path().join("d").exists());
}

#[test]
fn init_into_non_empty_dir_fails() {
    let home = Home::new();
    let disk = home.disk("d", "8M");
    home.fails(
        &["init", &disk, "--size", "8M", "--fs", "none"],
        code::ALREADY_EXISTS,
    );
}

#[test]
fn missing_input_file_is_not_found() {
    let home = Home::new();
    let disk = home.disk("d", "8M");
    let stderr = home.fails(
        &[
            "write",
            &disk,
            "--offset",
            "0",
            "--input",
            &home.join("nope"),
        ],
        code::NOT_FOUND,
    );
    assert!(stderr.contains("nope"), "{stderr}");
}

/// Returns the argument lists of the verbs that open a disk.
fn opening_verbs(home: &Home, disk: &str) -> Vec<Vec<String>> {
    let input = home.file("in", b"data");
    let raw = home.join("out.img");
    [
        vec!["info", disk],
        vec!["write", disk, "--offset", "0", "--input", &input],
        vec!["read", disk, "--offset", "0", "--length", "4K"],
        vec!["snapshot", disk],
        vec!["snapshot-list", disk],
        vec!["snapshot-merge", disk],
        vec!["resize", disk, "--size", "16M"],
        vec!["compact", disk],
        vec!["convert", disk, &raw, "--to", "raw"],
    ]
    .into_iter()
    .map(|args| args.into_iter().map(String::from).collect())
    .collect()
}

fn args(list: &[String]) -> Vec<&str> {
    list.iter().map(String::as_str).collect()
}

#[test]
fn corrupt_header_byte_exits_corrupt() {
    // Bytes of the 128-byte header record: magic, version, flags, cluster
    // size, virtual size, UUID, parent, BAT offset and length, data offset,
    // and the CRC itself.
    for offset in [0u64, 8, 12, 16, 24, 32, 48, 64, 72, 80, 88, 124] {
        let home = Home::new();
        let disk = home.disk("d", "8M");
        home.ok(&[
            "write",
            &disk,
            "--offset",
            "0",
            "--input",
            &home.file("a", &pattern(5000, 1)),
        ]);
        home.ok(&["snapshot", &disk, "--name", "s1"]);
        let deltas = delta_files(&disk);
        for delta in &deltas {
            flip_byte(delta, offset);
        }

        let stdout = home.lamina(&["check", &disk]);
        assert_eq!(stdout.status.code(), Some(code::CORRUPT), "offset {offset}");
        let report = String::from_utf8_lossy(&stdout.stdout);
        assert!(
            report.contains("header_invalid"),
            "offset {offset}: {report}"
        );
        lamina_common::assert_no_panic(&String::from_utf8_lossy(&stdout.stderr));

        let json: serde_json::Value =
            serde_json::from_slice(&home.lamina(&["check", &disk, "--json"]).stdout)
                .expect("check --json");
        assert_eq!(json["result"], "unrepairable", "offset {offset}");

        for verb in opening_verbs(&home, &disk) {
            let stderr = home.fails(&args(&verb), code::CORRUPT);
            assert!(stderr.contains("lamina check"), "{verb:?}: {stderr}");
        }
    }
}

#[test]
fn corrupt_bat_byte_exits_corrupt() {
    let home = Home::new();
    let disk = home.disk("d", "8M");
    home.ok(&[
        "write",
        &disk,
        "--offset",
        "0",
        "--input",
        &home.file("a", &pattern(5000, 2)),
    ]);
    home.ok(&["snapshot", &disk]);
    let b = home.file("b", &pattern(5000, 3));
    home.ok(&["write", &disk, "--offset", "2M", "--input", &b]);
    for delta in delta_files(&disk) {
        flip_byte(&delta, 4096 + 3);
    }

    let check = home.lamina(&["check", &disk]);
    assert_eq!(check.status.code(), Some(code::CORRUPT));
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(report.contains("bat_page_invalid"), "{report}");
    for verb in opening_verbs(&home, &disk) {
        home.fails(&args(&verb), code::CORRUPT);
    }
}

#[test]
fn corrupt_descriptor_exits_corrupt() {
    let home = Home::new();
    let disk = home.disk("d", "8M");
    std::fs::write(home.path().join("d/disk.json"), b"{\"version\": 1,").expect("write");
    home.fails(&["info", &disk], code::CORRUPT);
    let check = home.lamina(&["check", &disk]);
    assert_eq!(check.status.code(), Some(code::CORRUPT));
}

#[test]
fn check_clean_disk_exits_zero() {
    let home = Home::new();
    let disk = home.disk("d", "8M");
    home.ok(&[
        "write",
        &disk,
        "--offset",
        "0",
        "--input",
        &home.file("a", &pattern(9000, 3)),
    ]);
    home.ok(&["snapshot", &disk]);
    let out = home.ok(&["check", &disk]);
    assert!(out.contains("result: clean"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&home.ok(&["check", &disk, "--json"])).expect("check --json");
    assert_eq!(json["result"], "clean");
    assert_eq!(json["findings"].as_array().map(Vec::len), Some(0));
}

#[test]
fn check_repairable_then_repaired() {
    let home = Home::new();
    let disk = home.disk("d", "8M");
    let delta = &delta_files(&disk)[0];
    // Bytes after the 128-byte record in the 4 KiB header block must be zero.
    flip_byte(delta, 1000);

    let found = home.lamina(&["check", &disk]);
    assert_eq!(found.status.code(), Some(code::CHECK_REPAIRABLE));
    let report = String::from_utf8_lossy(&found.stdout);
    assert!(report.contains("header_padding"), "{report}");
    assert!(report.contains("--repair"), "{report}");

    let repaired = home.lamina(&["check", &disk, "--repair"]);
    assert_eq!(repaired.status.code(), Some(code::CHECK_REPAIRED));
    assert!(String::from_utf8_lossy(&repaired.stdout).contains("(repaired)"));

    let again = home.ok(&["check", &disk]);
    assert!(again.contains("result: clean"), "{again}");
}

#[test]
fn check_repair_leaves_unrepairable() {
    let home = Home::new();
    let disk = home.disk("d", "8M");
    flip_byte(&delta_files(&disk)[0], 30);
    let repair = home.lamina(&["check", &disk, "--repair"]);
    assert_eq!(repair.status.code(), Some(code::CORRUPT));
    let json: serde_json::Value =
        serde_json::from_slice(&home.lamina(&["check", &disk, "--json"]).stdout).expect("json");
    assert_eq!(json["result"], "unrepairable");
}

#[test]
fn check_missing_disk_is_not_found() {
    let home = Home::new();
    home.fails(&["check", &home.join("none")], code::NOT_FOUND);
}
