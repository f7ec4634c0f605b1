//! Resource limits of a container, read from its config keys.

use std::path::Path;

use super::config::ConfigFile;
use super::error::ContainerError;
use super::units::{UNLIMITED, Unit, Unlimited, page_size, parse_pair, parse_value};

/// The limits the runtime applies to a container's cgroup. `None` means no
/// limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    /// Memory limit in bytes (the limit part of PHYSPAGES).
    pub ram: Option<u64>,
    /// Swap limit in bytes (the limit part of SWAPPAGES).
    pub swap: Option<u64>,
    /// Number of CPUs (CPUS).
    pub cpus: Option<u32>,
    /// CPU limit in percent of one CPU (CPULIMIT; 0 is no limit).
    pub cpulimit: Option<u32>,
    /// CPU weight, 8 to 500000 (CPUUNITS).
    pub cpuunits: Option<u32>,
    /// Maximum number of processes (the limit part of NUMPROC).
    pub numproc: Option<u64>,
}

/// vzctl's range for CPUUNITS.
pub const CPUUNITS_RANGE: std::ops::RangeInclusive<u32> = 8..=500_000;

impl Resources {
    /// Reads the limits from `config`, naming `path` in errors.
    pub fn from_config(config: &ConfigFile, path: &Path) -> Result<Self, ContainerError> {
        let reader = Reader { config, path };
        Ok(Resources {
            ram: reader.pages_limit("PHYSPAGES")?,
            swap: reader.pages_limit("SWAPPAGES")?,
            cpus: reader.number("CPUS", 1..=u32::MAX)?,
            cpulimit: reader
                .number("CPULIMIT", 0..=u32::MAX)?
                .filter(|&limit| limit > 0),
            cpuunits: reader.number("CPUUNITS", CPUUNITS_RANGE)?,
            numproc: reader.count_limit("NUMPROC")?,
        })
    }
}

struct Reader<'a> {
    config: &'a ConfigFile,
    path: &'a Path,
}

impl Reader<'_> {
    fn invalid(&self, key: &str, value: &str, reason: String) -> ContainerError {
        ContainerError::InvalidConfig {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            value: value.to_string(),
            reason,
        }
    }

    fn pages_limit(&self, key: &str) -> Result<Option<u64>, ContainerError> {
        let Some(value) = self.config.get_nonempty(key) else {
            return Ok(None);
        };
        let (_, limit) = parse_pair(value, Unit::Pages, Unlimited::Allowed)
            .map_err(|err| self.invalid(key, value, err.to_string()))?;
        if limit >= UNLIMITED {
            return Ok(None);
        }
        Ok(Some(limit.saturating_mul(page_size())))
    }

    fn count_limit(&self, key: &str) -> Result<Option<u64>, ContainerError> {
        let Some(value) = self.config.get_nonempty(key) else {
            return Ok(None);
        };
        let (_, limit) = parse_pair(value, Unit::Count, Unlimited::Allowed)
            .map_err(|err| self.invalid(key, value, err.to_string()))?;
        Ok((limit < UNLIMITED).then_some(limit))
    }

    fn number(
        &self,
        key: &str,
        range: std::ops::RangeInclusive<u32>,
    ) -> Result<Option<u32>, ContainerError> {
        let Some(value) = self.config.get_nonempty(key) else {
            return Ok(None);
        };
        let number = parse_value(
            value.trim_end_matches('%'),
            Unit::Count,
            Unlimited::Rejected,
        )
        .ok()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| range.contains(n));
        let reason = || format!("use a number from {} to {}", range.start(), range.end());
        number
            .map(Some)
            .ok_or_else(|| self.invalid(key, value, reason()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_from_vswap_config() {
        let text = "PHYSPAGES=\"0:256M\"\nSWAPPAGES=\"0:131072\"\nCPUS=\"2\"\nCPULIMIT=\"150%\"\n\
                    CPUUNITS=\"1000\"\nNUMPROC=\"240:300\"\n";
        let config = ConfigFile::parse(text);
        let res = Resources::from_config(&config, Path::new("101.conf")).unwrap();
        assert_eq!(res.ram, Some(256 << 20));
        assert_eq!(res.swap, Some(131_072 * page_size()));
        assert_eq!(res.cpus, Some(2));
        assert_eq!(res.cpulimit, Some(150));
        assert_eq!(res.cpuunits, Some(1000));
        assert_eq!(res.numproc, Some(300));
    }

    #[test]
    fn unlimited_and_zero_mean_none() {
        let config = ConfigFile::parse("PHYSPAGES=\"0:unlimited\"\nCPULIMIT=\"0\"\n");
        let res = Resources::from_config(&config, Path::new("c")).unwrap();
        assert_eq!(res, Resources::default());
    }

    #[test]
    fn bad_values_are_invalid_config() {
        for text in [
            "PHYSPAGES=\"0:10Q\"",
            "CPUUNITS=\"1\"",
            "CPUS=\"0\"",
            "NUMPROC=\"1K\"",
        ] {
            let config = ConfigFile::parse(text);
            let err = Resources::from_config(&config, Path::new("c")).unwrap_err();
            assert_eq!(err.exit_code(), 85, "{text}");
        }
    }
}
