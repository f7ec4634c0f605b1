//! `check`: validates every delta of a disk's snapshot tree without
//! trusting any of it, and optionally repairs what a crash can leave.
//!
//! Each problem becomes a [`Finding`] with a severity. Only the leftovers
//! of an unclean stop are repaired: the in-use flag, BAT entries past the
//! end of the file, unreferenced clusters at the tail, unreferenced delta
//! files, a stale descriptor size and a leftover descriptor temp file.
//! Everything else (bad CRCs, bad entries, chain mismatches) is reported
//! as unrepairable, because fixing it would mean guessing data.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lamina_format::bat::decode_raw_page;
use lamina_format::header::{HEADER_BLOCK_SIZE, HEADER_RECORD_SIZE};
use lamina_format::{BAT_PAGE_SIZE, BatEntry, Descriptor, ENTRIES_PER_PAGE, EntryChecker};
use lamina_format::{FormatError, Header, Node};
use serde::Serialize;
use uuid::Uuid;

use super::delta::DeltaFile;
use super::error::ImageError;
use super::io::{LockMode, OpenMode, RealStorage, Storage};
use super::map::in_cluster;
use super::store;

/// Whether [`check`] repairs what it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckMode {
    /// Report only; takes the shared lock and writes nothing.
    Report,
    /// Report and repair; takes the exclusive lock.
    Repair,
}

/// Overall outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckResult {
    /// No warnings or errors.
    Clean,
    /// Only repairable problems were found and the check did not repair.
    Repairable,
    /// Every problem found was repaired.
    Repaired,
    /// At least one problem cannot be repaired.
    Unrepairable,
}

/// Severity of a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Harmless: wasted space that costs nothing, a leftover temp file.
    Info,
    /// Left by an unclean stop; the disk opens and reads correctly.
    Warning,
    /// Metadata is wrong; the disk or a snapshot does not open.
    Error,
}

/// The kind of a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// The descriptor does not parse or validate.
    DescriptorInvalid,
    /// `disk.json.tmp` was left by an interrupted descriptor update.
    DescriptorTemp,
    /// The descriptor's virtual size differs from the top delta's.
    DescriptorSize,
    /// A delta file the descriptor names does not exist or cannot be read.
    DeltaMissing,
    /// The header record is invalid (magic, CRC, version, geometry...).
    HeaderInvalid,
    /// Bytes after the header record in the header block are not zero.
    HeaderPadding,
    /// The header UUID differs from the descriptor's.
    UuidMismatch,
    /// The header's parent differs from the descriptor's.
    ParentMismatch,
    /// The cluster size differs from the descriptor's.
    ClusterSizeMismatch,
    /// A parent is larger than its child.
    SizeMismatch,
    /// The delta is marked in use: it was not closed cleanly.
    InUse,
    /// A BAT page fails its CRC or carries the wrong index.
    BatPageInvalid,
    /// A BAT entry has an invalid encoding.
    EntryInvalid,
    /// A BAT entry maps a cluster past the virtual size.
    EntryPastVirtualSize,
    /// A BAT entry points into the header or the BAT.
    EntryInMetadata,
    /// A BAT entry points past the end of the file.
    EntryPastEof,
    /// Two BAT entries point at one physical cluster.
    DuplicateCluster,
    /// Clusters past the last referenced one.
    LeakedTail,
    /// A delta file that no node of the descriptor references.
    OrphanFile,
}

/// One problem found by [`check`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Its severity.
    pub severity: Severity,
    /// Its kind.
    pub problem: Problem,
    /// The file it is in, relative to the disk directory.
    pub file: Option<String>,
    /// A sentence with the numbers.
    pub message: String,
    /// Whether `check --repair` can fix it.
    pub repairable: bool,
    /// Whether this run fixed it.
    pub repaired: bool,
}

/// The result of [`check`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// The disk directory.
    pub dir: PathBuf,
    /// The overall outcome.
    pub result: CheckResult,
    /// Every finding, in the order found.
    pub findings: Vec<Finding>,
}

impl CheckReport {
    /// Returns whether any finding has this problem.
    pub fn has(&self, problem: Problem) -> bool {
        self.findings.iter().any(|f| f.problem == problem)
    }
}

/// Most entry findings reported per delta; the rest are counted.
const MAX_ENTRY_FINDINGS: usize = 64;

/// Checks the disk in `dir`; see the module documentation. Fails only
/// when the disk cannot be checked at all: no descriptor, the lock is
/// held, or an I/O error.
pub fn check(dir: &Path, mode: CheckMode) -> Result<CheckReport, ImageError> {
    check_with(RealStorage::shared(), dir, mode)
}

/// Like [`check`] on any storage.
pub fn check_with(
    storage: Arc<dyn Storage>,
    dir: &Path,
    mode: CheckMode,
) -> Result<CheckReport, ImageError> {
    let lock_mode = match mode {
        CheckMode::Report => LockMode::Shared,
        CheckMode::Repair => LockMode::Exclusive,
    };
    let _lock = store::lock_disk(storage.as_ref(), dir, lock_mode)?;
    let mut run = Run {
        storage: storage.as_ref(),
        dir,
        mode,
        findings: Vec::new(),
    };
    run.check_temp()?;
    match store::load_descriptor(storage.as_ref(), dir) {
        Ok(descriptor) => run.check_disk(&descriptor)?,
        Err(ImageError::Descriptor { source, path }) => {
            // The message names the cause too, such as the invalid number.
            let mut message = source.to_string();
            let mut cause = std::error::Error::source(&source);
            while let Some(inner) = cause {
                message = format!("{message}: {inner}");
                cause = inner.source();
            }
            let file = path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned());
            run.add(Finding::error(
                Problem::DescriptorInvalid,
                file.as_deref(),
                message,
            ))
        }
        Err(e) => return Err(e),
    }
    let result = run.result();
    tracing::info!(dir = %dir.display(), ?result, findings = run.findings.len(), "disk checked");
    Ok(CheckReport {
        dir: dir.to_path_buf(),
        result,
        findings: run.findings,
    })
}

impl Finding {
    fn new(severity: Severity, problem: Problem, file: Option<&str>, message: String) -> Finding {
        Finding {
            severity,
            problem,
            file: file.map(str::to_string),
            message,
            repairable: false,
            repaired: false,
        }
    }

    fn error(problem: Problem, file: Option<&str>, message: String) -> Finding {
        Finding::new(Severity::Error, problem, file, message)
    }

    fn repairable(mut self) -> Finding {
        self.repairable = true;
        self
    }
}

struct Run<'a> {
    storage: &'a dyn Storage,
    dir: &'a Path,
    mode: CheckMode,
    findings: Vec<Finding>,
}

/// Result of the scan of one delta, as input to the repair.
#[derive(Default)]
struct DeltaScan {
    header: Option<Header>,
    /// The BAT was read completely and every entry is valid but for
    /// entries past the end of the file.
    bat_sound: bool,
    past_eof: Vec<u64>,
    data_end: u64,
    file_len: u64,
    padding_dirty: bool,
}

impl Run<'_> {
    fn add(&mut self, finding: Finding) {
        self.findings.push(finding);
    }

    fn repairing(&self) -> bool {
        self.mode == CheckMode::Repair
    }

    fn result(&self) -> CheckResult {
        let relevant = self.findings.iter().filter(|f| f.severity > Severity::Info);
        let mut result = CheckResult::Clean;
        for finding in relevant {
            let next = match (finding.repairable, finding.repaired) {
                (false, _) => CheckResult::Unrepairable,
                (true, true) => CheckResult::Repaired,
                (true, false) => CheckResult::Repairable,
            };
            result = worse(result, next);
        }
        result
    }

    fn check_temp(&mut self) -> Result<(), ImageError> {
        let temp = self.dir.join(store::DESCRIPTOR_TEMP);
        if !self
            .storage
            .exists(&temp)
            .map_err(|e| ImageError::io("stat", &temp, e))?
        {
            return Ok(());
        }
        let mut finding = Finding::new(
            Severity::Info,
            Problem::DescriptorTemp,
            Some(store::DESCRIPTOR_TEMP),
            "an interrupted descriptor update left a temporary file".to_string(),
        )
        .repairable();
        if self.repairing() {
            self.storage
                .remove_file(&temp)
                .map_err(|e| ImageError::io("remove", &temp, e))?;
            store::sync_dir(self.storage, self.dir)?;
            finding.repaired = true;
        }
        self.add(finding);
        Ok(())
    }

    fn check_disk(&mut self, descriptor: &Descriptor) -> Result<(), ImageError> {
        let mut headers = HashMap::new();
        for node in &descriptor.deltas {
            let scan = self.check_delta(descriptor, node)?;
            if let Some(header) = scan.header {
                headers.insert(node.uuid, header);
            }
            if self.repairing() {
                self.repair_delta(node, &scan)?;
            }
        }
        self.check_links(descriptor, &headers);
        self.check_size(descriptor, &headers)?;
        self.check_orphans(descriptor)
    }

    /// Checks a parent's geometry against each child's.
    fn check_links(&mut self, descriptor: &Descriptor, headers: &HashMap<Uuid, Header>) {
        for node in &descriptor.deltas {
            let (Some(parent), Some(header)) = (node.parent, headers.get(&node.uuid)) else {
                continue;
            };
            let Some(parent_header) = headers.get(&parent) else {
                continue;
            };
            let file = Some(node.file.as_str());
            let parent_size = parent_header.geometry.virtual_size();
            let size = header.geometry.virtual_size();
            if parent_size > size {
                self.add(Finding::error(
                    Problem::SizeMismatch,
                    file,
                    format!(
                        "delta {} has {size} bytes, less than its parent {parent} with {parent_size}",
                        node.uuid
                    ),
                ));
            }
        }
    }

    fn check_size(
        &mut self,
        descriptor: &Descriptor,
        headers: &HashMap<Uuid, Header>,
    ) -> Result<(), ImageError> {
        let Some(top) = headers.get(&descriptor.top) else {
            return Ok(());
        };
        let size = top.geometry.virtual_size();
        if size == descriptor.virtual_size {
            return Ok(());
        }
        let mut finding = Finding::new(
            Severity::Warning,
            Problem::DescriptorSize,
            Some(lamina_format::descriptor::DESCRIPTOR_FILE),
            format!(
                "descriptor says {} bytes, the top delta {size}; an interrupted resize, the top wins",
                descriptor.virtual_size
            ),
        )
        .repairable();
        if self.repairing() && self.result() != CheckResult::Unrepairable {
            let mut fixed = descriptor.clone();
            fixed.virtual_size = size;
            store::save_descriptor(self.storage, self.dir, &fixed)?;
            finding.repaired = true;
        }
        self.add(finding);
        Ok(())
    }

    fn check_orphans(&mut self, descriptor: &Descriptor) -> Result<(), ImageError> {
        let orphans = super::tree::orphan_files(self.storage, self.dir, descriptor)?;
        for name in &orphans {
            let mut finding = Finding::new(
                Severity::Warning,
                Problem::OrphanFile,
                Some(name),
                "no node of the descriptor references this delta file; an interrupted snapshot operation left it".to_string(),
            )
            .repairable();
            if self.repairing() {
                let path = self.dir.join(name);
                self.storage
                    .remove_file(&path)
                    .map_err(|e| ImageError::io("remove", &path, e))?;
                finding.repaired = true;
            }
            self.add(finding);
        }
        if self.repairing() && !orphans.is_empty() {
            store::sync_dir(self.storage, self.dir)?;
        }
        Ok(())
    }

    /// Checks one delta's header and BAT.
    fn check_delta(
        &mut self,
        descriptor: &Descriptor,
        node: &Node,
    ) -> Result<DeltaScan, ImageError> {
        let file = Some(node.file.as_str());
        let path = self.dir.join(&node.file);
        let mut scan = DeltaScan::default();
        let handle = match self.storage.open(&path, OpenMode::Read) {
            Ok(handle) => handle,
            Err(e) => {
                self.add(Finding::error(
                    Problem::DeltaMissing,
                    file,
                    format!("cannot open delta {}: {e}", node.uuid),
                ));
                return Ok(scan);
            }
        };
        let len = handle.len().map_err(|e| ImageError::io("stat", &path, e))?;
        scan.file_len = len;
        let block_len = len.min(HEADER_BLOCK_SIZE);
        let mut block = vec![0u8; in_cluster(block_len)];
        handle
            .read_at(&mut block, 0)
            .map_err(|e| ImageError::io("read header of", &path, e))?;
        let header = match Header::decode(&block).and_then(|h| h.check_file_len(len).map(|()| h)) {
            Ok(header) => header,
            Err(e) => {
                self.add(Finding::error(Problem::HeaderInvalid, file, e.to_string()));
                return Ok(scan);
            }
        };
        scan.header = Some(header);
        self.check_header(descriptor, node, &header, &block, &mut scan);

        let delta = DeltaFile::open(self.storage, &path, OpenMode::Read)?;
        self.check_bat(node, &delta, &mut scan)?;
        Ok(scan)
    }

    fn check_header(
        &mut self,
        descriptor: &Descriptor,
        node: &Node,
        header: &Header,
        block: &[u8],
        scan: &mut DeltaScan,
    ) {
        let file = Some(node.file.as_str());
        if block[HEADER_RECORD_SIZE..].iter().any(|b| *b != 0) {
            scan.padding_dirty = true;
            self.add(
                Finding::new(
                    Severity::Warning,
                    Problem::HeaderPadding,
                    file,
                    format!(
                        "bytes {HEADER_RECORD_SIZE}..{HEADER_BLOCK_SIZE} of the header block are not zero"
                    ),
                )
                .repairable(),
            );
        }
        if header.uuid != node.uuid {
            self.add(Finding::error(
                Problem::UuidMismatch,
                file,
                format!(
                    "header UUID is {}, the descriptor says {}",
                    header.uuid, node.uuid
                ),
            ));
        }
        if header.parent != node.parent {
            self.add(Finding::error(
                Problem::ParentMismatch,
                file,
                format!(
                    "header parent is {:?}, the descriptor says {:?}",
                    header.parent, node.parent
                ),
            ));
        }
        let cluster_size = header.geometry.cluster_size();
        if cluster_size != descriptor.cluster_size {
            self.add(Finding::error(
                Problem::ClusterSizeMismatch,
                file,
                format!(
                    "cluster size is {cluster_size}, the descriptor says {}",
                    descriptor.cluster_size
                ),
            ));
        }
        if header.in_use {
            self.add(
                Finding::new(
                    Severity::Warning,
                    Problem::InUse,
                    file,
                    "delta is marked in use: it was not closed cleanly".to_string(),
                )
                .repairable(),
            );
        }
    }

    /// Scans every BAT page that is not a hole and checks every entry.
    fn check_bat(
        &mut self,
        node: &Node,
        delta: &DeltaFile,
        scan: &mut DeltaScan,
    ) -> Result<(), ImageError> {
        let header = delta.header;
        let cluster_size = header.geometry.cluster_size();
        let mut checker = EntryChecker::new(
            cluster_size,
            header.clusters(),
            header.data_offset,
            scan.file_len,
        );
        let mut entry_findings = Vec::new();
        let mut sound = true;
        scan.data_end = header.data_offset;
        let mut bytes = vec![0u8; BAT_PAGE_SIZE];
        for page in delta.data_pages()? {
            delta
                .file()
                .read_at(&mut bytes, header.bat_page_offset(page))
                .map_err(|e| delta.io_error("read BAT of", e))?;
            let raw = match decode_raw_page(&bytes, page) {
                Ok(raw) => raw,
                Err(e) => {
                    sound = false;
                    self.add(Finding::error(
                        Problem::BatPageInvalid,
                        Some(&node.file),
                        e.to_string(),
                    ));
                    continue;
                }
            };
            let first = page * ENTRIES_PER_PAGE as u64;
            for (slot, value) in raw.into_iter().enumerate() {
                let cluster = first + slot as u64;
                let Some(entry) = BatEntry::decode(value) else {
                    sound = false;
                    let e = FormatError::BadEntry {
                        cluster,
                        raw: value,
                    };
                    entry_findings.push(Finding::error(
                        Problem::EntryInvalid,
                        Some(&node.file),
                        e.to_string(),
                    ));
                    continue;
                };
                if entry == BatEntry::Absent {
                    continue;
                }
                match checker.check(cluster, entry) {
                    Ok(()) => {
                        if let BatEntry::Allocated(physical) = entry {
                            scan.data_end = scan.data_end.max((physical + 1) * cluster_size);
                        }
                    }
                    Err(e @ FormatError::EntryPastEof { .. }) => {
                        scan.past_eof.push(cluster);
                        let severity = if header.in_use {
                            Severity::Warning
                        } else {
                            Severity::Error
                        };
                        entry_findings.push(
                            Finding::new(
                                severity,
                                Problem::EntryPastEof,
                                Some(&node.file),
                                e.to_string(),
                            )
                            .repairable(),
                        );
                    }
                    Err(e) => {
                        sound = false;
                        entry_findings.push(Finding::error(
                            entry_problem(&e),
                            Some(&node.file),
                            e.to_string(),
                        ));
                    }
                }
            }
        }
        self.add_capped(node, entry_findings);
        scan.bat_sound = sound;
        self.check_tail(node, delta, scan)
    }

    fn add_capped(&mut self, node: &Node, findings: Vec<Finding>) {
        let extra = findings.len().saturating_sub(MAX_ENTRY_FINDINGS);
        let worst = findings.iter().map(|f| f.severity).max();
        let all_repairable = findings.iter().all(|f| f.repairable);
        self.findings
            .extend(findings.into_iter().take(MAX_ENTRY_FINDINGS));
        if let (true, Some(severity)) = (extra > 0, worst) {
            let mut more = Finding::new(
                severity,
                Problem::EntryInvalid,
                Some(&node.file),
                format!("{extra} more bad BAT entries are not listed"),
            );
            more.repairable = all_repairable;
            self.add(more);
        }
    }

    fn check_tail(
        &mut self,
        node: &Node,
        delta: &DeltaFile,
        scan: &DeltaScan,
    ) -> Result<(), ImageError> {
        if scan.file_len <= scan.data_end || !scan.bat_sound {
            return Ok(());
        }
        let has_data = delta
            .file()
            .next_data(scan.data_end)
            .map_err(|e| delta.io_error("seek in", e))?
            .is_some();
        let severity = if has_data {
            Severity::Warning
        } else {
            Severity::Info
        };
        self.add(
            Finding::new(
                severity,
                Problem::LeakedTail,
                Some(&node.file),
                format!(
                    "{} bytes past the last referenced cluster at {}",
                    scan.file_len - scan.data_end,
                    scan.data_end
                ),
            )
            .repairable(),
        );
        Ok(())
    }

    /// Repairs the leftovers of an unclean stop in one delta whose BAT is
    /// otherwise sound, and marks the findings repaired.
    fn repair_delta(&mut self, node: &Node, scan: &DeltaScan) -> Result<(), ImageError> {
        let Some(header) = scan.header else {
            return Ok(());
        };
        let file = Some(node.file.clone());
        let pending = |f: &Finding| f.file == file && f.repairable && !f.repaired;
        if !scan.bat_sound || !self.findings.iter().any(pending) {
            return Ok(());
        }
        let path = self.dir.join(&node.file);
        let mut delta = DeltaFile::open(self.storage, &path, OpenMode::ReadWrite)?;
        if !scan.past_eof.is_empty() {
            delta.clear_entries(&scan.past_eof)?;
        }
        if scan.file_len > scan.data_end {
            delta
                .file()
                .set_len(scan.data_end)
                .map_err(|e| delta.io_error("truncate", e))?;
            delta.sync()?;
        }
        if header.in_use || scan.padding_dirty {
            delta.header.in_use = false;
            delta.write_header()?;
        }
        for finding in self.findings.iter_mut().filter(|f| pending(f)) {
            finding.repaired = true;
        }
        tracing::warn!(path = %path.display(), "repaired delta");
        Ok(())
    }
}

fn entry_problem(error: &FormatError) -> Problem {
    match error {
        FormatError::EntryPastVirtualSize { .. } => Problem::EntryPastVirtualSize,
        FormatError::EntryInMetadata { .. } => Problem::EntryInMetadata,
        FormatError::SharedPhysicalCluster { .. } => Problem::DuplicateCluster,
        FormatError::EntryPastEof { .. } => Problem::EntryPastEof,
        _ => Problem::EntryInvalid,
    }
}

fn worse(a: CheckResult, b: CheckResult) -> CheckResult {
    let rank = |r: CheckResult| match r {
        CheckResult::Clean => 0,
        CheckResult::Repaired => 1,
        CheckResult::Repairable => 2,
        CheckResult::Unrepairable => 3,
    };
    if rank(b) > rank(a) { b } else { a }
}
