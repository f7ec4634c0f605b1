//! Extended attributes of a template's members, read from the PAX headers
//! in a pass of their own.
//!
//! GNU tar (`--xattrs`) stores each attribute as a `SCHILY.xattr.NAME`
//! record in the member's PAX header. Values are binary: POSIX ACLs
//! (`system.posix_acl_access`) contain newline bytes, which the `tar`
//! crate's PAX parser splits on, so it loses them. Records are length
//! prefixed (`LEN KEY=VALUE\n`, POSIX.1-2001 pax format), and this module
//! parses them by length.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

/// Attributes per member path (relative, without `.` components).
pub type XattrMap = HashMap<PathBuf, Vec<(Vec<u8>, Vec<u8>)>>;

const XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";

/// Reads every member header of the archive in `reader` and returns the
/// extended attributes of each member that has some.
pub fn collect(reader: impl Read) -> io::Result<XattrMap> {
    let mut archive = tar::Archive::new(reader);
    let mut map = XattrMap::new();
    let mut pending = Pending::default();

    for entry in archive.entries()?.raw(true) {
        let mut entry = entry?;
        match entry.header().entry_type() {
            EntryType::XHeader => {
                let mut data = Vec::new();
                entry.read_to_end(&mut data)?;
                pending.add_records(&data)?;
            }
            EntryType::GNULongName => {
                let mut data = Vec::new();
                entry.read_to_end(&mut data)?;
                let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                data.truncate(end);
                pending.long_name = Some(data);
            }
            EntryType::XGlobalHeader | EntryType::GNULongLink => {}
            _ => {
                let name = pending.path.take().or(pending.long_name.take());
                let name = name.unwrap_or_else(|| entry.header().path_bytes().into_owned());
                let attrs = std::mem::take(&mut pending.xattrs);
                if !attrs.is_empty() {
                    map.insert(normalize(&name), attrs);
                }
                pending = Pending::default();
            }
        }
    }
    Ok(map)
}

#[derive(Default)]
struct Pending {
    path: Option<Vec<u8>>,
    long_name: Option<Vec<u8>>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Pending {
    fn add_records(&mut self, data: &[u8]) -> io::Result<()> {
        for (key, value) in parse_records(data)? {
            if key == b"path" {
                self.path = Some(value.to_vec());
            } else if let Some(name) = key.strip_prefix(XATTR_PREFIX) {
                self.xattrs.push((name.to_vec(), value.to_vec()));
            }
        }
        Ok(())
    }
}

/// Splits PAX header data into `(key, value)` records by their lengths.
pub fn parse_records(data: &[u8]) -> io::Result<Vec<(&[u8], &[u8])>> {
    let malformed = |at: usize| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("malformed PAX record at byte {at}"),
        )
    };
    let mut records = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let rest = &data[pos..];
        let space = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| malformed(pos))?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| malformed(pos))?;
        if len <= space + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(malformed(pos));
        }
        let record = &rest[space + 1..len - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| malformed(pos))?;
        records.push((&record[..eq], &record[eq + 1..]));
        pos += len;
    }
    Ok(records)
}

fn normalize(name: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let path = Path::new(std::ffi::OsStr::from_bytes(name));
    path.components()
        .filter_map(|c| match c {
            Component::Normal(part) => Some(part),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_with_newlines_in_values() {
        let value = b"\x02\x00\n\x00\xff";
        let key = b"SCHILY.xattr.system.posix_acl_access";
        let body_len = key.len() + 1 + value.len() + 1;
        // The length counts its own digits and the space.
        let len = body_len + 3;
        let mut data = format!("{len} ").into_bytes();
        data.extend_from_slice(key);
        data.push(b'=');
        data.extend_from_slice(value);
        data.push(b'\n');
        data.extend_from_slice(b"12 path=a/b\n");

        let records = parse_records(&data).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0], (&key[..], &value[..]));
        assert_eq!(records[1], (&b"path"[..], &b"a/b"[..]));
    }

    #[test]
    fn bad_lengths_are_rejected() {
        for data in [
            &b"99 path=x\n"[..],
            b"5 path=x\n",
            b"x path=x\n",
            b"9 pathx\n\n",
        ] {
            assert!(parse_records(data).is_err(), "{data:?} parsed");
        }
    }

    #[test]
    fn names_are_normalized() {
        assert_eq!(normalize(b"./etc/sub/"), PathBuf::from("etc/sub"));
    }
}
