//! One delta file by itself: create it, read and write its header, and
//! read, validate and write its BAT pages.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lamina_format::bat::{self, decode_raw_page, decode_raw_page_ignoring_crc, encode_raw_page};
use lamina_format::{BAT_PAGE_SIZE, BatEntry, ENTRIES_PER_PAGE, EntryChecker, FormatError, Header};

use super::error::ImageError;
use super::io::{OpenMode, Storage, StorageFile};

/// Policy of [`DeltaFile::scan`] for an entry that points past the end
/// of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PastEof {
    /// Fail with [`FormatError::EntryPastEof`].
    Reject,
    /// Report the entry as absent and list it in [`ScanReport::past_eof`],
    /// as after a crash of a delta marked in use. Pages with a bad CRC are
    /// then accepted as torn if their entries are valid, and listed in
    /// [`ScanReport::torn_pages`].
    Drop,
}

/// Summary of a BAT scan.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanReport {
    /// Number of allocated entries.
    pub allocated: u64,
    /// End of the last referenced data cluster, or the data offset when
    /// none is referenced.
    pub data_end: u64,
    /// `(virtual cluster, physical cluster)` of every dropped entry.
    pub past_eof: Vec<(u64, u64)>,
    /// Pages accepted despite a CRC mismatch, as torn by a crash; only
    /// with [`PastEof::Drop`].
    pub torn_pages: Vec<u64>,
    /// BAT pages that are not holes.
    pub pages_read: u64,
}

/// An open delta file with its decoded header. A clone shares the open
/// file.
#[derive(Debug, Clone)]
pub struct DeltaFile {
    path: PathBuf,
    file: Arc<dyn StorageFile>,
    /// The header as last read or written.
    pub header: Header,
}

impl DeltaFile {
    /// Creates a new delta file with an empty BAT and makes it durable.
    /// The caller syncs the directory.
    pub fn create(
        storage: &dyn Storage,
        path: &Path,
        header: Header,
    ) -> Result<DeltaFile, ImageError> {
        let file = storage
            .open(path, OpenMode::CreateNew)
            .map_err(|e| ImageError::io("create", path, e))?;
        let delta = DeltaFile {
            path: path.to_path_buf(),
            file,
            header,
        };
        delta
            .file
            .set_len(header.data_offset)
            .map_err(|e| delta.io_error("extend", e))?;
        delta.write_header()?;
        Ok(delta)
    }

    /// Opens a delta file and validates its header against the file length.
    pub fn open(
        storage: &dyn Storage,
        path: &Path,
        mode: OpenMode,
    ) -> Result<DeltaFile, ImageError> {
        let file = storage
            .open(path, mode)
            .map_err(|e| ImageError::io("open", path, e))?;
        let len = file.len().map_err(|e| ImageError::io("stat", path, e))?;
        let mut block = vec![0u8; lamina_format::header::HEADER_RECORD_SIZE];
        if len < block.len() as u64 {
            return Err(ImageError::Format {
                path: path.to_path_buf(),
                source: FormatError::Truncated {
                    len: usize::try_from(len).unwrap_or(0),
                    needed: block.len(),
                },
            });
        }
        file.read_at(&mut block, 0)
            .map_err(|e| ImageError::io("read header of", path, e))?;
        let header = Header::decode(&block)
            .and_then(|h| h.check_file_len(len).map(|()| h))
            .map_err(|source| ImageError::Format {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(DeltaFile {
            path: path.to_path_buf(),
            file,
            header,
        })
    }

    /// Returns the file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Returns the open file.
    pub fn file(&self) -> &Arc<dyn StorageFile> {
        &self.file
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        self.header.geometry.cluster_size()
    }

    /// Byte offset of a physical cluster.
    pub fn cluster_offset(&self, physical: u64) -> u64 {
        physical * self.cluster_size()
    }

    /// Builds an I/O error naming this file.
    pub fn io_error(&self, op: &'static str, source: std::io::Error) -> ImageError {
        ImageError::io(op, &self.path, source)
    }

    /// Builds a format error naming this file.
    pub fn format_error(&self, source: FormatError) -> ImageError {
        ImageError::Format {
            path: self.path.clone(),
            source,
        }
    }

    /// Writes the header block and syncs it.
    pub fn write_header(&self) -> Result<(), ImageError> {
        self.file
            .write_at(&self.header.encode(), 0)
            .map_err(|e| self.io_error("write header of", e))?;
        self.file.sync_data().map_err(|e| self.io_error("sync", e))
    }

    /// Returns the file length in bytes.
    pub fn file_len(&self) -> Result<u64, ImageError> {
        self.file.len().map_err(|e| self.io_error("stat", e))
    }

    /// Reads BAT page `page` and returns its raw entry values after
    /// checking its CRC32. A hole reads as all absent.
    pub fn read_raw_page(&self, page: u64) -> Result<[u64; ENTRIES_PER_PAGE], ImageError> {
        let bytes = self.read_page_bytes(page)?;
        decode_raw_page(&bytes, page).map_err(|e| self.format_error(e))
    }

    /// Reads BAT page `page` without checking its CRC32; see
    /// [`decode_raw_page_ignoring_crc`].
    pub fn read_raw_page_ignoring_crc(
        &self,
        page: u64,
    ) -> Result<[u64; ENTRIES_PER_PAGE], ImageError> {
        let bytes = self.read_page_bytes(page)?;
        decode_raw_page_ignoring_crc(&bytes, page).map_err(|e| self.format_error(e))
    }

    fn read_page_bytes(&self, page: u64) -> Result<Vec<u8>, ImageError> {
        let mut bytes = vec![0u8; BAT_PAGE_SIZE];
        self.file
            .read_at(&mut bytes, self.header.bat_page_offset(page))
            .map_err(|e| self.io_error("read BAT of", e))?;
        Ok(bytes)
    }

    /// Writes BAT page `page` from raw entry values. Does not sync.
    pub fn write_raw_page(
        &self,
        page: u64,
        entries: [u64; ENTRIES_PER_PAGE],
    ) -> Result<(), ImageError> {
        self.file
            .write_at(
                &encode_raw_page(page, entries),
                self.header.bat_page_offset(page),
            )
            .map_err(|e| self.io_error("write BAT of", e))
    }

    /// Returns the indexes of the BAT pages that are not holes. It skips
    /// holes with `SEEK_DATA` and `SEEK_HOLE`, so an empty BAT costs no
    /// reads and a full one two seeks per data region.
    pub fn data_pages(&self) -> Result<Vec<u64>, ImageError> {
        let start = self.header.bat_offset();
        let end = start + self.header.bat_len;
        let page_size = BAT_PAGE_SIZE as u64;
        let seek_error = |e| self.io_error("seek in", e);
        let mut pages = Vec::new();
        let mut pos = start;
        while pos < end {
            let Some(data) = self.file.next_data(pos).map_err(seek_error)? else {
                break;
            };
            if data >= end {
                break;
            }
            let hole = self.file.next_hole(data).map_err(seek_error)?.min(end);
            let first = (data - start) / page_size;
            let last = (hole.max(data + 1) - start).div_ceil(page_size);
            pages.extend(first..last);
            pos = start + last * page_size;
        }
        Ok(pages)
    }

    /// Reads and validates every non-hole BAT page and calls `visit` with
    /// each non-absent entry. Entries are checked against the layout: in
    /// the data area, inside the file, each physical cluster used once.
    pub fn scan(
        &self,
        past_eof: PastEof,
        mut visit: impl FnMut(u64, BatEntry),
    ) -> Result<ScanReport, ImageError> {
        let cluster_size = self.cluster_size();
        let file_len = self.file_len()?;
        let mut checker = EntryChecker::new(
            cluster_size,
            self.header.clusters(),
            self.header.data_offset,
            file_len,
        );
        let mut report = ScanReport {
            data_end: self.header.data_offset,
            ..ScanReport::default()
        };
        for page in self.data_pages()? {
            report.pages_read += 1;
            let raw = match self.read_raw_page(page) {
                Err(ImageError::Format {
                    source: FormatError::BatPageCrcMismatch { .. },
                    ..
                }) if past_eof == PastEof::Drop => {
                    report.torn_pages.push(page);
                    self.read_raw_page_ignoring_crc(page)?
                }
                other => other?,
            };
            let first = page * ENTRIES_PER_PAGE as u64;
            for (slot, value) in raw.into_iter().enumerate() {
                let cluster = first + slot as u64;
                let entry = BatEntry::decode(value)
                    .ok_or(FormatError::BadEntry {
                        cluster,
                        raw: value,
                    })
                    .map_err(|e| self.format_error(e))?;
                if entry == BatEntry::Absent {
                    continue;
                }
                match checker.check(cluster, entry) {
                    Ok(()) => {}
                    Err(FormatError::EntryPastEof { physical, .. })
                        if past_eof == PastEof::Drop =>
                    {
                        report.past_eof.push((cluster, physical));
                        continue;
                    }
                    Err(e) => return Err(self.format_error(e)),
                }
                if let BatEntry::Allocated(physical) = entry {
                    report.allocated += 1;
                    report.data_end = report.data_end.max((physical + 1) * cluster_size);
                }
                visit(cluster, entry);
            }
        }
        Ok(report)
    }

    /// Sets the entries of `clusters` to absent on disk, page by page, and
    /// syncs. Pages are read without a CRC check, so torn pages are
    /// rewritten with a fresh one.
    pub fn clear_entries(&self, clusters: &[u64]) -> Result<(), ImageError> {
        self.rewrite_pages(&[], clusters)
    }

    /// Rewrites BAT pages with fresh CRCs: every page in `pages`, and the
    /// pages of `clusters`, whose entries are set to absent. Syncs. Used
    /// by repair for torn pages and entries past the end of the file.
    pub fn rewrite_pages(&self, pages: &[u64], clusters: &[u64]) -> Result<(), ImageError> {
        let mut by_page = std::collections::BTreeMap::<u64, Vec<usize>>::new();
        for page in pages {
            by_page.entry(*page).or_default();
        }
        for cluster in clusters {
            let (page, slot) = bat::page_and_slot(*cluster);
            by_page.entry(page).or_default().push(slot);
        }
        for (page, slots) in by_page {
            let mut raw = self.read_raw_page_ignoring_crc(page)?;
            for slot in slots {
                raw[slot] = 0;
            }
            self.write_raw_page(page, raw)?;
        }
        self.file.sync_data().map_err(|e| self.io_error("sync", e))
    }
}

impl DeltaFile {
    /// Returns the first physical cluster past the end of the file (and
    /// past the metadata), where the next cluster can be appended.
    pub fn next_free_cluster(&self) -> Result<u64, ImageError> {
        let cluster_size = self.cluster_size();
        let end = self.file_len()?.div_ceil(cluster_size);
        Ok(end.max(self.header.data_offset / cluster_size))
    }

    /// Reads `buf.len()` bytes from the start of a physical cluster.
    pub fn read_cluster(&self, physical: u64, buf: &mut [u8]) -> Result<(), ImageError> {
        self.file
            .read_at(buf, self.cluster_offset(physical))
            .map_err(|e| self.io_error("read", e))
    }

    /// Writes `data` at the start of a physical cluster. Does not sync.
    pub fn write_cluster(&self, physical: u64, data: &[u8]) -> Result<(), ImageError> {
        self.file
            .write_at(data, self.cluster_offset(physical))
            .map_err(|e| self.io_error("write", e))
    }

    /// Makes written data durable (fdatasync).
    pub fn sync(&self) -> Result<(), ImageError> {
        self.file.sync_data().map_err(|e| self.io_error("sync", e))
    }

    /// Loads the whole BAT into a [`BatTable`], validated like
    /// [`DeltaFile::scan`] does.
    pub fn load_bat(&self, past_eof: PastEof) -> Result<(BatTable, ScanReport), ImageError> {
        let mut table = BatTable::default();
        let report = self.scan(past_eof, |cluster, entry| {
            table.set_clean(cluster, entry);
        })?;
        Ok((table, report))
    }
}

/// An in-memory copy of one delta's BAT for offline operations. It keeps
/// only pages with entries and tracks which pages changed.
#[derive(Debug, Default, Clone)]
pub struct BatTable {
    pages: std::collections::BTreeMap<u64, [u64; ENTRIES_PER_PAGE]>,
    dirty: std::collections::BTreeSet<u64>,
}

impl BatTable {
    /// Returns the entry of a virtual cluster.
    pub fn get(&self, cluster: u64) -> BatEntry {
        let (page, slot) = bat::page_and_slot(cluster);
        self.pages
            .get(&page)
            .and_then(|raw| BatEntry::decode(raw[slot]))
            .unwrap_or(BatEntry::Absent)
    }

    /// Sets the entry of a virtual cluster and marks its page changed.
    pub fn set(&mut self, cluster: u64, entry: BatEntry) {
        let (page, _) = bat::page_and_slot(cluster);
        self.set_clean(cluster, entry);
        self.dirty.insert(page);
    }

    fn set_clean(&mut self, cluster: u64, entry: BatEntry) {
        let (page, slot) = bat::page_and_slot(cluster);
        let raw = self.pages.entry(page).or_insert([0; ENTRIES_PER_PAGE]);
        raw[slot] = entry.encode();
    }

    /// Returns every non-absent `(virtual cluster, entry)` in cluster order.
    pub fn entries(&self) -> impl Iterator<Item = (u64, BatEntry)> + '_ {
        self.pages.iter().flat_map(|(page, raw)| {
            let first = page * ENTRIES_PER_PAGE as u64;
            raw.iter().enumerate().filter_map(move |(slot, value)| {
                let entry = BatEntry::decode(*value)?;
                (entry != BatEntry::Absent).then_some((first + slot as u64, entry))
            })
        })
    }

    /// Returns the number of allocated entries.
    pub fn allocated(&self) -> u64 {
        let allocated = self
            .entries()
            .filter(|(_, e)| matches!(e, BatEntry::Allocated(_)))
            .count();
        allocated as u64
    }

    /// Writes the changed pages to `delta` without syncing and clears
    /// their changed marks. Sync the data they point to before this.
    pub fn write_dirty(&mut self, delta: &DeltaFile) -> Result<(), ImageError> {
        for page in std::mem::take(&mut self.dirty) {
            let raw = self
                .pages
                .get(&page)
                .copied()
                .unwrap_or([0; ENTRIES_PER_PAGE]);
            delta.write_raw_page(page, raw)?;
        }
        Ok(())
    }
}
