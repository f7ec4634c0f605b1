//! A disk over 4 GiB: data written across and past the 4 GiB mark survives
//! snapshot, merge and export to raw byte for byte (checked with `cmp`
//! against a sparse reference file written with the same data).

mod lamina_common;

use std::os::unix::fs::FileExt;
use std::process::Command;

use lamina_common::{GIB, Home, MIB, code, pattern};

/// Writes `data` at `offset` into the disk and into the reference file.
fn write_both(home: &Home, disk: &str, reference: &std::fs::File, offset: u64, data: &[u8]) {
    let input = home.file("chunk", data);
    home.ok(&[
        "write",
        disk,
        "--offset",
        &offset.to_string(),
        "--input",
        &input,
    ]);
    reference
        .write_all_at(data, offset)
        .expect("write reference");
}

fn cmp(a: &str, b: &str) {
    let output = Command::new("cmp").args([a, b]).output().expect("run cmp");
    assert!(
        output.status.success(),
        "cmp {a} {b}: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn over_4gib_round_trips_raw() {
    let home = Home::new();
    let disk = home.disk("d", "5G");
    let reference_path = home.join("reference.img");
    let reference = std::fs::File::create(&reference_path).expect("create reference");
    reference.set_len(5 * GIB).expect("size reference");

    write_both(&home, &disk, &reference, 0, &pattern(100_000, 1));
    // Crosses the 4 GiB mark: cluster index times cluster size needs 33 bits.
    write_both(
        &home,
        &disk,
        &reference,
        4 * GIB - MIB - 17,
        &pattern(3 << 20, 2),
    );
    home.ok(&["snapshot", &disk, "--name", "s1"]);

    write_both(
        &home,
        &disk,
        &reference,
        4 * GIB + 2 * MIB + 5,
        &pattern(2 << 20, 3),
    );
    write_both(
        &home,
        &disk,
        &reference,
        4 * GIB + 512 * MIB,
        &pattern(1 << 20, 4),
    );
    home.ok(&["snapshot", &disk, "--name", "s2"]);
    write_both(&home, &disk, &reference, 5 * GIB - 4096, &pattern(4096, 5));
    drop(reference);

    let len = (4 << 20).to_string();
    let offset = (4 * GIB - MIB).to_string();
    let direct = home.join("direct");
    home.ok(&[
        "read", &disk, "--offset", &offset, "--length", &len, "--output", &direct,
    ]);
    let expected = std::fs::File::open(&reference_path).expect("open reference");
    let mut want = vec![0u8; 4 << 20];
    expected
        .read_exact_at(&mut want, 4 * GIB - MIB)
        .expect("read reference");
    assert!(
        std::fs::read(&direct).expect("read output") == want,
        "read across 4 GiB differs"
    );

    let before = home.join("before.img");
    home.ok(&["convert", &disk, &before, "--to", "raw"]);
    cmp(&reference_path, &before);

    home.ok(&["snapshot-merge", &disk]);
    let merged = home.join("merged.img");
    home.ok(&["convert", &disk, &merged, "--to", "raw"]);
    cmp(&reference_path, &merged);

    home.ok(&["snapshot-merge", &disk, "--all"]);
    home.fails(&["snapshot-merge", &disk], code::USAGE);
    let all = home.join("all.img");
    home.ok(&["convert", &disk, &all, "--to", "raw"]);
    cmp(&reference_path, &all);

    let check = home.ok(&["check", &disk]);
    assert!(check.contains("result: clean"), "{check}");
}
