//! vzctl config files (`KEY="value"` lines), read and rewritten in place.
//!
//! The parser keeps every line, so saving changes only the lines of the keys
//! that were set and keeps comments, blank lines and order. Values follow
//! vzctl 4.x. A value is the text after the first `=`. A quoted value runs
//! to the last `"` on the line, and an unquoted value ends at ` #` (a
//! trailing comment).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::{ErrorKind, HasKind};

/// A config file that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Reading the file failed.
    #[error("Unable to read config {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Writing the file failed; the old file is unchanged.
    #[error("Unable to save config {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ConfigError {
    /// Returns the vzctl exit code: 3 for a read error, 139 for a save error.
    pub fn exit_code(&self) -> i32 {
        match self {
            ConfigError::Read { .. } => 3,
            ConfigError::Write { .. } => 139,
        }
    }
}

impl HasKind for ConfigError {
    fn kind(&self) -> ErrorKind {
        match self {
            ConfigError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            _ => ErrorKind::Io,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    /// A `KEY=value` line: the key, the parsed value and the original text.
    Entry {
        key: String,
        value: String,
        text: String,
    },
    /// A comment, a blank line or a line that is not an assignment.
    Other(String),
}

/// The lines of a config file with fast access to its keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigFile {
    lines: Vec<Line>,
}

impl ConfigFile {
    /// Parses config text. Never fails: lines that are not assignments are
    /// kept as they are and ignored.
    pub fn parse(text: &str) -> Self {
        let lines = text.lines().map(parse_line).collect();
        ConfigFile { lines }
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self::parse(&text))
    }

    /// Reads `path`, or returns an empty config when it does not exist.
    pub fn load_or_empty(path: &Path) -> Result<Self, ConfigError> {
        match fs::read_to_string(path) {
            Ok(text) => Ok(Self::parse(&text)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Returns the value of `key`. As in vzctl, the first assignment wins
    /// and later duplicates are ignored.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.lines.iter().find_map(|line| match line {
            Line::Entry { key: k, value, .. } if k == key => Some(value.as_str()),
            _ => None,
        })
    }

    /// Returns the value of `key` unless it is missing or empty.
    pub fn get_nonempty(&self, key: &str) -> Option<&str> {
        self.get(key).filter(|value| !value.is_empty())
    }

    /// Returns every key in file order, each once.
    pub fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = Vec::new();
        for line in &self.lines {
            if let Line::Entry { key, .. } = line
                && !keys.contains(&key.as_str())
            {
                keys.push(key);
            }
        }
        keys
    }

    /// Sets `key` to `value`: rewrites the first line of that key in place
    /// or appends a line. Returns whether the value changed.
    pub fn set(&mut self, key: &str, value: &str) -> bool {
        if self.get(key) == Some(value) {
            return false;
        }
        let new_line = Line::Entry {
            key: key.to_string(),
            value: value.to_string(),
            text: format!("{key}=\"{value}\""),
        };
        let existing = self
            .lines
            .iter_mut()
            .find(|line| matches!(line, Line::Entry { key: k, .. } if k == key));
        match existing {
            Some(line) => *line = new_line,
            None => self.lines.push(new_line),
        }
        true
    }

    /// Removes every line of `key`. Returns whether a line was removed.
    pub fn remove(&mut self, key: &str) -> bool {
        let before = self.lines.len();
        self.lines
            .retain(|line| !matches!(line, Line::Entry { key: k, .. } if k == key));
        before != self.lines.len()
    }

    /// Applies every assignment of `other` on top of this file.
    pub fn merge(&mut self, other: &ConfigFile) {
        for key in other.keys() {
            if let Some(value) = other.get(key) {
                self.set(key, value);
            }
        }
    }

    /// Returns the file text, one line per parsed line.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        for line in &self.lines {
            match line {
                Line::Entry { text: t, .. } | Line::Other(t) => text.push_str(t),
            }
            text.push('\n');
        }
        text
    }

    /// Writes the file atomically: a temp file beside `path`, fsync, rename
    /// over `path` (resolving a symlink first, as vzctl does), fsync of the
    /// directory.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let target = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        write_atomic(&target, self.to_text().as_bytes()).map_err(|source| ConfigError::Write {
            path: path.to_path_buf(),
            source,
        })
    }
}

fn parse_line(raw: &str) -> Line {
    let other = || Line::Other(raw.to_string());
    let trimmed = raw.trim();
    if trimmed.starts_with('#') {
        return other();
    }
    let Some((key, rest)) = trimmed.split_once('=') else {
        return other();
    };
    let key = key.trim();
    if !is_valid_key(key) {
        return other();
    }
    Line::Entry {
        key: key.to_string(),
        value: parse_value(rest),
        text: raw.to_string(),
    }
}

fn is_valid_key(key: &str) -> bool {
    let mut bytes = key.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    first_ok && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn parse_value(rest: &str) -> String {
    let rest = rest.trim();
    if let Some(quoted) = rest.strip_prefix('"') {
        let end = quoted.rfind('"').unwrap_or(quoted.len());
        return quoted[..end].to_string();
    }
    // vz.conf ships `NAMESERVER=inherit # comment`; the comment is dropped.
    let end = rest
        .find(" #")
        .or_else(|| rest.find("\t#"))
        .unwrap_or(rest.len());
    rest[..end].trim_end().to_string()
}

/// Replaces `path` with `data` atomically: write `path.tmp`, fsync, rename,
/// fsync the directory, so that a crash leaves the old or the new file.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);

    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# Container config
ONBOOT=\"yes\"

PHYSPAGES=\"0:262144\"
NAMESERVER=inherit # copy from host
HOSTNAME=plain
  DESCRIPTION=\"say \"hi\" there\"
not an assignment
ONBOOT=\"no\"
";

    #[test]
    fn values_are_parsed() {
        let config = ConfigFile::parse(SAMPLE);
        assert_eq!(config.get("PHYSPAGES"), Some("0:262144"));
        assert_eq!(config.get("NAMESERVER"), Some("inherit"));
        assert_eq!(config.get("HOSTNAME"), Some("plain"));
        assert_eq!(config.get("DESCRIPTION"), Some("say \"hi\" there"));
        assert_eq!(config.get("MISSING"), None);
    }

    #[test]
    fn first_duplicate_wins() {
        let config = ConfigFile::parse(SAMPLE);
        assert_eq!(config.get("ONBOOT"), Some("yes"));
    }

    #[test]
    fn unchanged_text_round_trips() {
        let config = ConfigFile::parse(SAMPLE);
        assert_eq!(config.to_text(), SAMPLE);
    }

    #[test]
    fn set_rewrites_in_place() {
        let mut config = ConfigFile::parse(SAMPLE);
        assert!(config.set("PHYSPAGES", "0:131072"));
        let text = config.to_text();
        let expected = SAMPLE.replace("PHYSPAGES=\"0:262144\"", "PHYSPAGES=\"0:131072\"");
        assert_eq!(text, expected);
    }

    #[test]
    fn set_appends_new_key() {
        let mut config = ConfigFile::parse(SAMPLE);
        assert!(config.set("CPUS", "2"));
        assert!(config.to_text().starts_with(SAMPLE));
        assert!(config.to_text().ends_with("CPUS=\"2\"\n"));
    }

    #[test]
    fn set_same_value_reports_no_change() {
        let mut config = ConfigFile::parse(SAMPLE);
        assert!(!config.set("HOSTNAME", "plain"));
        assert_eq!(config.to_text(), SAMPLE);
    }

    #[test]
    fn remove_drops_all_lines() {
        let mut config = ConfigFile::parse(SAMPLE);
        assert!(config.remove("ONBOOT"));
        assert_eq!(config.get("ONBOOT"), None);
        assert!(!config.to_text().contains("ONBOOT"));
    }

    #[test]
    fn keys_in_order_once() {
        let config = ConfigFile::parse(SAMPLE);
        let keys = config.keys();
        assert_eq!(
            keys,
            [
                "ONBOOT",
                "PHYSPAGES",
                "NAMESERVER",
                "HOSTNAME",
                "DESCRIPTION"
            ]
        );
    }

    #[test]
    fn save_keeps_comments_and_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("101.conf");
        fs::write(&path, SAMPLE).unwrap();

        let mut config = ConfigFile::load(&path).unwrap();
        config.set("HOSTNAME", "ct101");
        config.save(&path).unwrap();

        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text, SAMPLE.replace("HOSTNAME=plain", "HOSTNAME=\"ct101\""));
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temp file left behind");
    }

    #[test]
    fn save_through_symlink_replaces_target() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.conf");
        let link = dir.path().join("link.conf");
        fs::write(&real, "A=\"1\"\n").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();

        let mut config = ConfigFile::load(&link).unwrap();
        config.set("A", "2");
        config.save(&link).unwrap();

        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_to_string(&real).unwrap(), "A=\"2\"\n");
    }

    #[test]
    fn merge_overrides_and_appends() {
        let mut base = ConfigFile::parse("A=\"1\"\n# keep\nB=\"2\"\n");
        base.merge(&ConfigFile::parse("B=\"3\"\nC=\"4\"\n"));
        assert_eq!(base.to_text(), "A=\"1\"\n# keep\nB=\"3\"\nC=\"4\"\n");
    }

    #[test]
    fn missing_file_loads_empty() {
        let dir = tempfile::tempdir().unwrap();
        let config = ConfigFile::load_or_empty(&dir.path().join("none")).unwrap();
        assert!(config.keys().is_empty());
        assert!(ConfigFile::load(&dir.path().join("none")).is_err());
    }
}
