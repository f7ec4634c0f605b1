//! The offline `lamina` verbs end to end through the real binary: init,
//! info, write, read, snapshot, snapshot-list, delete, switch, merge,
//! resize, compact and convert.

mod lamina_common;

use lamina_common::{Home, MIB, MIB_LEN, code, pattern};

#[test]
fn write_read_round_trip() {
    let home = Home::new();
    let disk = home.disk("d", "16M");
    let data = pattern(3 * MIB_LEN + 123, 1);
    let input = home.file("in", &data);

    home.ok(&["write", &disk, "--offset", "1000", "--input", &input]);
    let output = home.join("out");
    let len = data.len().to_string();
    home.ok(&[
        "read", &disk, "--offset", "1000", "--length", &len, "--output", &output,
    ]);
    assert_eq!(std::fs::read(&output).expect("read output"), data);

    let stdout = home.lamina(&["read", &disk, "--offset", "1000", "--length", "4K"]);
    assert!(stdout.status.success());
    assert_eq!(stdout.stdout, data[..4096]);

    let zeros = home.lamina(&["read", &disk, "--offset", "8M", "--length", "64K"]);
    assert!(zeros.stdout.iter().all(|b| *b == 0));
    assert_eq!(zeros.stdout.len(), 64 << 10);
}

#[test]
fn write_past_end_is_rejected() {
    let home = Home::new();
    let disk = home.disk("d", "1M");
    let input = home.file("in", &pattern(4096, 2));
    let stderr = home.fails(
        &["write", &disk, "--offset", "1022K", "--input", &input],
        code::USAGE,
    );
    assert!(stderr.contains("1046528"), "{stderr}");
    home.fails(
        &["read", &disk, "--offset", "1M", "--length", "1"],
        code::USAGE,
    );
}

#[test]
fn info_reports_geometry() {
    let home = Home::new();
    let disk = home.disk("d", "64M");
    let text = home.ok(&["info", &disk]);
    assert!(text.contains("virtual_size: 67108864"), "{text}");
    assert!(text.contains("cluster_size: 1048576"), "{text}");
    assert!(text.contains("chain_depth: 1"), "{text}");
    assert!(text.contains("mounted: no"), "{text}");

    let json: serde_json::Value =
        serde_json::from_str(&home.ok(&["info", &disk, "--json"])).expect("info --json");
    assert_eq!(json["disk"]["virtual_size"], 64 * MIB);
    assert_eq!(json["disk"]["chain_depth"], 1);
    assert!(json["mount"].is_null());
}

#[test]
fn closed_stdout_does_not_panic() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};

    let home = Home::new();
    let disk = home.disk("d", "64M");
    // A 64 MiB read is far more than a pipe buffer, so the writer meets
    // the closed pipe whatever the timing.
    let verbs: [&[&str]; 3] = [
        &["info", &disk],
        &["snapshot-list", &disk],
        &["read", &disk, "--offset", "0", "--length", "64M"],
    ];
    for args in verbs {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lamina"))
            .args(args)
            .env("LAMINA_HOME", home.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run lamina");
        drop(child.stdout.take());
        let output = child.wait_with_output().expect("wait for lamina");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        let quiet = output.status.success()
            || output.status.signal() == Some(nix::sys::signal::Signal::SIGPIPE as i32);
        assert!(quiet, "{args:?}: {:?}", output.status);
    }
}

#[test]
fn init_cluster_size_is_used() {
    let home = Home::new();
    let disk = home.join("d");
    home.ok(&[
        "init",
        &disk,
        "--size",
        "1G",
        "--cluster-size",
        "64K",
        "--fs",
        "none",
    ]);
    let json: serde_json::Value =
        serde_json::from_str(&home.ok(&["info", &disk, "--json"])).expect("info --json");
    assert_eq!(json["disk"]["cluster_size"], 64 << 10);
    assert_eq!(json["disk"]["virtual_size"], 1u64 << 30);
}

#[test]
fn snapshot_reads_frozen_data() {
    let home = Home::new();
    let disk = home.disk("d", "8M");
    let old = pattern(100_000, 3);
    let new = pattern(100_000, 4);
    home.ok(&[
        "write",
        &disk,
        "--offset",
        "0",
        "--input",
        &home.file("old", &old),
    ]);

    let uuid = home.ok(&[
        "snapshot",
        &disk,
        "--name",
        "before",
        "--description",
        "first",
    ]);
    let uuid = uuid.trim_end();
    assert!(
        uuid::Uuid::parse_str(uuid).is_ok(),
        "snapshot printed {uuid:?}"
    );
    home.ok(&[
        "write",
        &disk,
        "--offset",
        "0",
        "--input",
        &home.file("new", &new),
    ]);

    let len = old.len().to_string();
    for id in ["before", uuid] {
        let read = home.lamina(&[
            "read",
            &disk,
            "--offset",
            "0",
            "--length",
            &len,
            "--snapshot",
            id,
        ]);
        assert!(read.status.success());
        assert_eq!(read.stdout, old, "snapshot {id}");
    }
    let current = home.lamina(&["read", &disk, "--offset", "0", "--length", &len]);
    assert_eq!(current.stdout, new);
}

#[test]
fn snapshot_list_fields_and_header() {
    let home = Home::new();
    let disk = home.disk("d", "8M");
    let first = home.ok(&["snapshot", &disk, "--name", "one"]);
    let first = first.trim_end();

    let lines = home.ok(&["snapshot-list", &disk, "-H", "-o", "uuid,name"]);
    let rows: Vec<Vec<&str>> = lines
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{lines}");
    assert!(rows.contains(&vec![first, "one"]), "{lines}");
    assert!(
        rows.iter().all(|r| r[0] != "UUID"),
        "header printed: {lines}"
    );

    let table = home.ok(&["snapshot-list", &disk]);
    assert!(table.starts_with("UUID"), "{table}");
    assert!(table.contains("CURRENT"), "{table}");

    let json: Vec<serde_json::Value> =
        serde_json::from_str(&home.ok(&["snapshot-list", &disk, "--json"])).expect("json");
    assert_eq!(json.len(), 2);
    let snapshot = json
        .iter()
        .find(|s| s["uuid"] == first)
        .expect("snapshot listed");
    assert_eq!(snapshot["name"], "one");
    assert_eq!(snapshot["current"], false);

    let stderr = home.fails(&["snapshot-list", &disk, "-o", "uuid,size"], code::USAGE);
    assert!(stderr.contains("\"size\""), "{stderr}");
}

#[test]
fn snapshot_name_taken_is_rejected() {
    let home = Home::new();
    let disk = home.disk("d", "8M");
    home.ok(&["snapshot", &disk, "--name", "same"]);
    home.fails(&["snapshot", &disk, "--name", "same"], code::USAGE);
}

#[test]
fn unknown_snapshot_is_not_found() {
    let home = Home::new();
    let disk = home.disk("d", "8M");
    home.ok(&["snapshot", &disk, "--name", "real"]);
    let missing = "00000000-0000-0000-0000-000000000001";
    for args in [
        vec!["snapshot-delete", &disk, "nosuch"],
        vec!["snapshot-switch", &disk, "nosuch"],
        vec!["snapshot-delete", &disk, missing],
        vec![
            "read",
            &disk,
            "--offset",
            "0",
            "--length",
            "1",
            "--snapshot",
            "nosuch",
        ],
        vec![
            "convert",
            &disk,
            "/nonexistent-out",
            "--to",
            "raw",
            "--snapshot",
            "nosuch",
        ],
    ] {
        let stderr = home.fails(&args, code::NOT_FOUND);
        assert!(
            stderr.contains("nosuch") || stderr.contains(missing),
            "{stderr}"
        );
    }
    home.fails(&["info", &home.join("no-disk")], code::NOT_FOUND);
}

#[test]
fn switch_discards_current_state() {
    let home = Home::new();
    let disk = home.disk("d", "8M");
    let old = pattern(70_000, 5);
    home.ok(&[
        "write",
        &disk,
        "--offset",
        "2M",
        "--input",
        &home.file("old", &old),
    ]);
    home.ok(&["snapshot", &disk, "--name", "base"]);
    home.ok(&[
        "write",
        &disk,
        "--offset",
        "2M",
        "--input",
        &home.file("new", &pattern(70_000, 6)),
    ]);

    let top = home.ok(&["snapshot-switch", &disk, "base"]);
    assert!(uuid::Uuid::parse_str(top.trim_end()).is_ok(), "{top:?}");
    let read = home.lamina(&["read", &disk, "--offset", "2M", "--length", "70000"]);
    assert_eq!(read.stdout, old);
    home.fails(&["snapshot-switch", &disk, top.trim_end()], code::USAGE);
}

#[test]
fn delete_keeps_content() {
    let home = Home::new();
    let disk = home.disk("d", "8M");
    let a = pattern(MIB_LEN, 7);
    let b = pattern(MIB_LEN / 2, 8);
    home.ok(&[
        "write",
        &disk,
        "--offset",
        "0",
        "--input",
        &home.file("a", &a),
    ]);
    home.ok(&["snapshot", &disk, "--name", "s1"]);
    home.ok(&[
        "write",
        &disk,
        "--offset",
        "3M",
        "--input",
        &home.file("b", &b),
    ]);
    home.ok(&["snapshot", &disk, "--name", "s2"]);

    home.ok(&["snapshot-delete", &disk, "s1"]);
    let names = home.ok(&["snapshot-list", &disk, "-H", "-o", "name"]);
    assert!(!names.contains("s1"), "{names}");
    assert!(names.contains("s2"), "{names}");

    let read_a = home.lamina(&["read", &disk, "--offset", "0", "--length", "1M"]);
    assert_eq!(read_a.stdout, a);
    let read_b = home.lamina(&[
        "read",
        &disk,
        "--offset",
        "3M",
        "--length",
        "512K",
        "--snapshot",
        "s2",
    ]);
    assert_eq!(read_b.stdout, b);
}

#[test]
fn delete_current_top_is_rejected() {
    let home = Home::new();
    let disk = home.disk("d", "8M");
    let list = home.ok(&["snapshot-list", &disk, "-H", "-o", "uuid"]);
    home.fails(&["snapshot-delete", &disk, list.trim()], code::USAGE);
}

#[test]
fn merge_keeps_content() {
    let home = Home::new();
    let disk = home.disk("d", "8M");
    let mut expected = vec![0u8; 8 * MIB_LEN];
    for (i, offset) in [0usize, 1, 2, 3].iter().enumerate() {
        let data = pattern(300_000, u8::try_from(i).unwrap_or(0));
        let at = offset * 1_500_000;
        expected[at..at + data.len()].copy_from_slice(&data);
        let name = format!("in{i}");
        home.ok(&[
            "write",
            &disk,
            "--offset",
            &at.to_string(),
            "--input",
            &home.file(&name, &data),
        ]);
        home.ok(&["snapshot", &disk]);
    }

    home.ok(&["snapshot-merge", &disk]);
    let depth = |home: &Home| -> u64 {
        let info: serde_json::Value =
            serde_json::from_str(&home.ok(&["info", &disk, "--json"])).expect("info");
        info["disk"]["chain_depth"].as_u64().expect("chain_depth")
    };
    assert_eq!(depth(&home), 4);
    let read = home.lamina(&["read", &disk, "--offset", "0", "--length", "8M"]);
    assert!(read.stdout == expected, "content changed after merge");

    home.ok(&["snapshot-merge", &disk, "--all"]);
    assert_eq!(depth(&home), 1);
    let read = home.lamina(&["read", &disk, "--offset", "0", "--length", "8M"]);
    assert!(read.stdout == expected, "content changed after merge --all");
    home.fails(&["snapshot-merge", &disk], code::USAGE);
}

#[test]
fn resize_grows_and_shrinks() {
    let home = Home::new();
    let disk = home.disk("d", "8M");
    let data = pattern(4096, 9);
    home.ok(&[
        "write",
        &disk,
        "--offset",
        "1M",
        "--input",
        &home.file("in", &data),
    ]);

    home.ok(&["resize", &disk, "--size", "5G"]);
    let size = |home: &Home| -> u64 {
        let info: serde_json::Value =
            serde_json::from_str(&home.ok(&["info", &disk, "--json"])).expect("info");
        info["disk"]["virtual_size"].as_u64().expect("virtual_size")
    };
    assert_eq!(size(&home), 5 << 30);

    home.ok(&["resize", &disk, "--size", "4M"]);
    assert_eq!(size(&home), 4 * MIB);
    let stderr = home.fails(&["resize", &disk, "--size", "1M"], code::USAGE);
    assert!(stderr.contains("1048576"), "{stderr}");
    let read = home.lamina(&["read", &disk, "--offset", "1M", "--length", "4K"]);
    assert_eq!(read.stdout, data);
}

#[test]
fn compact_frees_zero_clusters() {
    let home = Home::new();
    let disk = home.disk("d", "8M");
    let zeros = home.file("zeros", &vec![0u8; 2 * MIB_LEN]);
    home.ok(&["write", &disk, "--offset", "0", "--input", &zeros]);
    let out = home.ok(&["compact", &disk]);
    let freed: u64 = out
        .trim()
        .strip_prefix("freed: ")
        .and_then(|n| n.parse().ok())
        .expect("compact prints freed: N");
    assert!(freed >= 2 * MIB, "freed {freed}");
}

#[test]
fn convert_round_trips_with_qemu() {
    let home = Home::new();
    let raw = home.join("src.img");
    let file = std::fs::File::create(&raw).expect("create raw");
    file.set_len(32 * MIB).expect("size raw");
    drop(file);
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&raw)
            .expect("open raw");
        file.write_all_at(&pattern(200_000, 10), 5 * MIB)
            .expect("write raw");
        file.write_all_at(&pattern(1000, 11), 31 * MIB)
            .expect("write raw");
    }

    let disk = home.join("d");
    home.ok(&[
        "convert",
        &raw,
        &disk,
        "--to",
        "lamina",
        "--cluster-size",
        "64K",
    ]);
    let back = home.join("back.img");
    let report = home.ok(&["convert", &disk, &back, "--to", "raw"]);
    assert!(report.contains("virtual_size: 33554432"), "{report}");

    let compare = std::process::Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "raw", &raw, &back])
        .output()
        .expect("run qemu-img");
    assert!(
        compare.status.success(),
        "qemu-img compare: {}",
        String::from_utf8_lossy(&compare.stdout)
    );
    home.fails(
        &["convert", &raw, &disk, "--to", "lamina"],
        code::ALREADY_EXISTS,
    );
}
