use super::*;

fn row(id: u32, status: &'static str, config: &str, nproc: Option<u64>) -> Row {
    Row {
        ctid: Ctid::parse(&id.to_string()).unwrap(),
        config: ConfigFile::parse(config),
        private: PathBuf::from(format!("/p/{id}")),
        root: PathBuf::from(format!("/r/{id}")),
        status,
        nproc,
        disk_used_kb: None,
        inodes_used: None,
    }
}

fn sample_rows() -> Vec<Row> {
    vec![
        row(
            101,
            "running",
            "HOSTNAME=\"web\"\nIP_ADDRESS=\"10.0.0.1 10.0.0.2\"\n",
            Some(12),
        ),
        row(
            102,
            "stopped",
            "HOSTNAME=\"db.example.org\"\nCPUUNITS=\"500\"\n",
            None,
        ),
        row(7, "mounted", "", None),
    ]
}

#[test]
fn default_header_matches_vzlist() {
    let fields = parse_fields(DEFAULT_FIELDS).unwrap();
    let table = format_table(&[], &fields, true, true);
    assert_eq!(
        table,
        "      CTID      NPROC STATUS    IP_ADDR         HOSTNAME\n"
    );
}

#[test]
fn default_rows_are_aligned() {
    let fields = parse_fields(DEFAULT_FIELDS).unwrap();
    let table = format_table(&sample_rows(), &fields, false, true);
    let lines: Vec<&str> = table.lines().collect();
    // The IP column is cut at 15 characters, as vzlist does without -t.
    assert_eq!(
        lines[0],
        "       101         12 running   10.0.0.1 10.0.0 web"
    );
    assert_eq!(
        lines[1],
        "       102          - stopped   -               db.example.org"
    );
    assert_eq!(
        lines[2],
        "         7          - mounted   -               -"
    );
}

#[test]
fn long_text_is_trimmed_unless_last() {
    let fields = parse_fields("hostname,ctid").unwrap();
    let long = "h".repeat(40);
    let rows = vec![row(1, "running", &format!("HOSTNAME=\"{long}\""), None)];
    let trimmed = format_table(&rows, &fields, false, true);
    assert_eq!(trimmed, format!("{}          1\n", "h".repeat(32)));
    let untrimmed = format_table(&rows, &fields, false, false);
    assert_eq!(untrimmed, format!("{long}          1\n"));
}

#[test]
fn sort_by_field_and_reverse() {
    let mut rows = sample_rows();
    sort(&mut rows, field("ctid").unwrap(), false);
    let ids: Vec<u32> = rows.iter().map(|r| r.ctid.get()).collect();
    assert_eq!(ids, [7, 101, 102]);

    sort(&mut rows, field("hostname").unwrap(), true);
    let ids: Vec<u32> = rows.iter().map(|r| r.ctid.get()).collect();
    assert_eq!(ids, [101, 102, 7]);

    sort(&mut rows, field("cpuunits").unwrap(), false);
    assert_eq!(rows[2].ctid.get(), 102);
}

#[test]
fn json_uses_nulls_and_arrays() {
    let fields = parse_fields("ctid,numproc,ip,hostname,cpuunits").unwrap();
    let json = format_json(&sample_rows()[..2], &fields);
    let expected = serde_json::json!([
        {"ctid": 101, "numproc": 12, "ip": ["10.0.0.1", "10.0.0.2"], "hostname": "web", "cpuunits": null},
        {"ctid": 102, "numproc": null, "ip": [], "hostname": "db.example.org", "cpuunits": 500},
    ]);
    assert_eq!(json, expected);
}

#[test]
fn aliases_and_unknown_fields() {
    assert_eq!(field("veid").unwrap().name, "ctid");
    assert_eq!(field("vpsid").unwrap().name, "ctid");
    let err = parse_fields("ctid,bogus").err().unwrap();
    assert_eq!(err.exit_code(), 21);
    assert!(err.to_string().contains("-o"), "{err}");
}

#[test]
fn sort_field_and_direction() {
    let (field, reverse) = parse_sort("-hostname").unwrap();
    assert_eq!((field.name, reverse), ("hostname", true));
    let (field, reverse) = parse_sort("veid").unwrap();
    assert_eq!((field.name, reverse), ("ctid", false));
    for bad in ["nosuch", "-nosuch", "ctid,hostname", ""] {
        let err = parse_sort(bad).err().unwrap();
        assert_eq!(err.exit_code(), 21, "{bad}");
        let message = err.to_string();
        assert!(message.starts_with("Invalid value for -s"), "{message}");
    }
}

#[test]
fn field_listing_names_every_field() {
    let listing = field_listing();
    for f in FIELDS {
        assert!(listing.contains(f.name), "{} missing", f.name);
    }
}

#[test]
fn disk_limits_in_kb() {
    let r = row(1, "stopped", "DISKSPACE=\"2G:2.2G\"\n", None);
    assert_eq!(
        (field("diskspace.s").unwrap().get)(&r),
        Value::Number(Some(2 << 20))
    );
    assert_eq!(
        (field("diskspace.h").unwrap().get)(&r),
        Value::Number(Some(2_306_868))
    );
}

#[test]
fn glob_patterns() {
    let cases = [
        ("web*", "web01", true),
        ("web*", "db01", false),
        ("*.example.org", "a.example.org", true),
        ("ct10?", "ct101", true),
        ("ct10?", "ct1011", false),
        ("ct[0-9]x", "ct5x", true),
        ("ct[!0-9]x", "ct5x", false),
        ("ct[]]", "ct]", true),
        ("[abc", "[abc", true),
        ("", "", true),
        ("*", "", true),
    ];
    for (pattern, text, expected) in cases {
        assert_eq!(
            glob_match(pattern, text),
            expected,
            "{pattern:?} vs {text:?}"
        );
    }
}
