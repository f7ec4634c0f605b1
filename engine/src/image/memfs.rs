//! An in-memory [`Storage`] that models a page cache and injects faults,
//! for crash tests.
//!
//! Writes, length changes and hole punches change a file's volatile
//! content; `sync_data`/`sync_all` copy it to the durable content. Creates,
//! renames and removes change the volatile namespace; `sync_dir` of the
//! parent makes them durable. [`MemStorage::crash`] returns a storage that
//! holds only the durable state, as a machine would after power loss.
//!
//! [`MemStorage::crash_keeping`] lets chosen unsynced changes survive as
//! well, to model writeback that happened before the crash.
//!
//! [`MemStorage::fail_after`] stops the storage after a number of
//! mutating calls (writes, length changes, punches, syncs, creates,
//! renames, removes): that call and every later call, reads included,
//! fail with an injected error. A crash test runs an operation once to
//! count its calls with [`MemStorage::op_count`], then for every N reruns
//! it on a fresh copy stopped after N calls and checks the crashed state.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::io::{LockGuard, LockMode, OpenMode, Storage, StorageFile};

const BLOCK: u64 = 4096;
const BLOCK_SIZE: usize = 4096;

#[derive(Debug, Clone, Default)]
struct Content {
    len: u64,
    /// Blocks that hold data; a missing block is a hole.
    blocks: BTreeMap<u64, Arc<[u8; BLOCK_SIZE]>>,
}

impl Content {
    fn read(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or(io::ErrorKind::InvalidInput)?;
        if end > self.len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (block, within) = (pos / BLOCK, (pos % BLOCK) as usize);
            let take = (BLOCK_SIZE - within).min(buf.len() - done);
            let out = &mut buf[done..done + take];
            match self.blocks.get(&block) {
                Some(data) => out.copy_from_slice(&data[within..within + take]),
                None => out.fill(0),
            }
            done += take;
        }
        Ok(())
    }

    fn write(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or(io::ErrorKind::InvalidInput)?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (block, within) = (pos / BLOCK, (pos % BLOCK) as usize);
            let take = (BLOCK_SIZE - within).min(buf.len() - done);
            let data = self
                .blocks
                .entry(block)
                .or_insert_with(|| Arc::new([0; BLOCK_SIZE]));
            Arc::make_mut(data)[within..within + take].copy_from_slice(&buf[done..done + take]);
            done += take;
        }
        self.len = self.len.max(end);
        Ok(())
    }

    /// Zeros `[start, end)`: whole blocks become holes.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "offsets inside a 4 KiB block"
    )]
    fn zero(&mut self, start: u64, end: u64) {
        let end = end.min(self.len);
        let mut pos = start;
        while pos < end {
            let (block, within) = (pos / BLOCK, (pos % BLOCK) as usize);
            let take = (BLOCK - pos % BLOCK).min(end - pos);
            if within == 0 && take == BLOCK {
                self.blocks.remove(&block);
            } else if let Some(data) = self.blocks.get_mut(&block) {
                let take = take as usize;
                Arc::make_mut(data)[within..within + take].fill(0);
            }
            pos += take;
        }
    }

    fn set_len(&mut self, len: u64) {
        if len < self.len {
            self.zero(len, self.len);
            let keep = len.div_ceil(BLOCK);
            self.blocks.retain(|b, _| *b < keep);
        }
        self.len = len;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    File(u64),
    Dir,
}

/// A change to a file's content that no sync has made durable yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// `write_at` of `data` at `offset`.
    Write {
        /// Start of the write.
        offset: u64,
        /// The bytes written.
        data: Vec<u8>,
    },
    /// `set_len`.
    SetLen {
        /// The new length.
        len: u64,
    },
    /// `punch_hole` of `[offset, offset + len)`.
    Punch {
        /// Start of the hole.
        offset: u64,
        /// Length of the hole.
        len: u64,
    },
}

impl Pending {
    fn apply(&self, content: &mut Content) {
        match self {
            // The write succeeded once, so its range is valid.
            Pending::Write { offset, data } => {
                let _ = content.write(data, *offset);
            }
            Pending::SetLen { len } => content.set_len(*len),
            Pending::Punch { offset, len } => content.zero(*offset, offset + len),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Inode {
    volatile: Content,
    durable: Content,
    /// Changes since the last sync, oldest first.
    pending: Vec<Pending>,
}

impl Inode {
    fn record(&mut self, change: Pending) {
        change.apply(&mut self.volatile);
        self.pending.push(change);
    }
}

#[derive(Debug, Default)]
struct State {
    next_inode: u64,
    inodes: HashMap<u64, Inode>,
    volatile: BTreeMap<PathBuf, Entry>,
    durable: BTreeMap<PathBuf, Entry>,
    locks: HashMap<PathBuf, (LockMode, usize)>,
    ops: u64,
    fail_at: Option<u64>,
    stopped: bool,
}

impl State {
    /// Counts a mutating call and fails it when the storage is stopped.
    fn mutate(&mut self) -> io::Result<()> {
        self.check()?;
        if self.fail_at.is_some_and(|n| self.ops >= n) {
            self.stopped = true;
            return Err(injected());
        }
        self.ops += 1;
        Ok(())
    }

    fn check(&self) -> io::Result<()> {
        if self.stopped {
            Err(injected())
        } else {
            Ok(())
        }
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.parent().is_none() || self.volatile.get(path) == Some(&Entry::Dir)
    }

    fn check_parent(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() && !self.is_dir(parent) => {
                Err(io::ErrorKind::NotFound.into())
            }
            _ => Ok(()),
        }
    }

    fn inode(&mut self, id: u64) -> io::Result<&mut Inode> {
        self.inodes
            .get_mut(&id)
            .ok_or(io::ErrorKind::NotFound.into())
    }
}

fn injected() -> io::Error {
    io::Error::other("injected fault: storage stopped")
}

/// Decides whether an unsynced change survives a crash; see
/// [`MemStorage::crash_keeping`].
pub type Keep = fn(Option<&Path>, &Pending) -> bool;

/// A named writeback pattern for [`MemStorage::at_every_cut`].
#[derive(Debug, Clone, Copy)]
pub struct Writeback {
    /// Name used in failure messages.
    pub name: &'static str,
    /// Predicate that selects the unsynced changes that survive.
    pub keep: Keep,
}

impl Writeback {
    /// Every unsynced change is lost.
    pub const NONE: Writeback = Writeback {
        name: "none",
        keep: |_, _| false,
    };
    /// Every unsynced change survives.
    pub const ALL: Writeback = Writeback {
        name: "all",
        keep: |_, _| true,
    };
}

/// One simulated crash of [`MemStorage::at_every_cut`].
#[derive(Debug, Clone, Copy)]
pub struct CrashPoint {
    /// Number of mutating calls that succeeded before the storage stopped.
    pub cut: u64,
    /// Mutating calls the operation makes without faults.
    pub total: u64,
    /// Name of the writeback pattern.
    pub writeback: &'static str,
}

impl std::fmt::Display for CrashPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cut {}/{} (writeback: {})",
            self.cut, self.total, self.writeback
        )
    }
}

/// The fault-injecting in-memory storage. Clones share one state.
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    state: Arc<Mutex<State>>,
}

impl MemStorage {
    /// Creates an empty storage with only the root directory.
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    /// Returns this storage as the shared handle `Disk::*_with` take.
    pub fn shared(&self) -> Arc<dyn Storage> {
        Arc::new(self.clone())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of mutating calls so far.
    pub fn op_count(&self) -> u64 {
        self.lock().ops
    }

    /// Lets `n` more mutating calls succeed; the next one and every call
    /// after it fail.
    pub fn fail_after(&self, n: u64) {
        let mut state = self.lock();
        state.fail_at = Some(state.ops + n);
    }

    /// Returns whether an injected fault has stopped the storage.
    pub fn is_stopped(&self) -> bool {
        self.lock().stopped
    }

    /// Returns a new storage holding only what was durable: synced file
    /// content and synced directory entries. Locks are gone and no fault
    /// is armed. This storage is left unchanged.
    pub fn crash(&self) -> MemStorage {
        self.crash_keeping(|_, _| false)
    }

    /// Like [`MemStorage::crash`], but unsynced changes for which `keep`
    /// returns true survive too, applied in their original order, as if
    /// the kernel had written them back before the power loss. `keep`
    /// gets the file's current path (`None` once removed) and the change.
    /// Keeping only metadata writes, for example, finds code that writes
    /// a BAT entry before syncing the data it points to.
    pub fn crash_keeping(&self, keep: impl Fn(Option<&Path>, &Pending) -> bool) -> MemStorage {
        let state = self.lock();
        let paths: HashMap<u64, &Path> = state
            .volatile
            .iter()
            .filter_map(|(path, entry)| match entry {
                Entry::File(id) => Some((*id, path.as_path())),
                Entry::Dir => None,
            })
            .collect();
        let inodes = state
            .inodes
            .iter()
            .map(|(id, inode)| {
                let mut content = inode.durable.clone();
                let path = paths.get(id).copied();
                for change in inode.pending.iter().filter(|c| keep(path, c)) {
                    change.apply(&mut content);
                }
                let inode = Inode {
                    volatile: content.clone(),
                    durable: content,
                    pending: Vec::new(),
                };
                (*id, inode)
            })
            .collect();
        MemStorage {
            state: Arc::new(Mutex::new(State {
                next_inode: state.next_inode,
                inodes,
                volatile: state.durable.clone(),
                durable: state.durable.clone(),
                ..State::default()
            })),
        }
    }

    /// Returns a copy of the current (volatile) state without faults, as
    /// if everything had been synced.
    pub fn fork(&self) -> MemStorage {
        let state = self.lock();
        let inodes = state
            .inodes
            .iter()
            .map(|(id, inode)| {
                let content = inode.volatile.clone();
                let inode = Inode {
                    volatile: content.clone(),
                    durable: content,
                    pending: Vec::new(),
                };
                (*id, inode)
            })
            .collect();
        MemStorage {
            state: Arc::new(Mutex::new(State {
                next_inode: state.next_inode,
                inodes,
                volatile: state.volatile.clone(),
                durable: state.volatile.clone(),
                ..State::default()
            })),
        }
    }

    /// Runs a crash test. `op` runs once on a fork of this storage to count
    /// its mutating calls, then, for every cut point from 0 to that count,
    /// on a fresh fork stopped after that many calls. Each stopped run is
    /// crashed once per writeback pattern, and `verify` gets the crashed
    /// storage, what `op` returned and the crash point. This storage is
    /// not changed. Returns the number of mutating calls of `op`.
    pub fn at_every_cut<T>(
        &self,
        writebacks: &[Writeback],
        op: impl Fn(&MemStorage) -> T,
        mut verify: impl FnMut(&MemStorage, &T, CrashPoint),
    ) -> u64 {
        let probe = self.fork();
        let start = probe.op_count();
        op(&probe);
        let total = probe.op_count() - start;
        for cut in 0..=total {
            let storage = self.fork();
            storage.fail_after(cut);
            let result = op(&storage);
            for writeback in writebacks {
                let point = CrashPoint {
                    cut,
                    total,
                    writeback: writeback.name,
                };
                verify(&storage.crash_keeping(writeback.keep), &result, point);
            }
        }
        total
    }

    /// Returns a file's current content, or `None` if it does not exist.
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.lock();
        let Some(Entry::File(id)) = state.volatile.get(path) else {
            return None;
        };
        let content = &state.inodes.get(id)?.volatile;
        let mut out = vec![0u8; usize::try_from(content.len).ok()?];
        content.read(&mut out, 0).ok()?;
        Some(out)
    }

    /// Overwrites bytes of a file in both its current and its durable
    /// content, as a disk corruption would. Does not count as a call.
    pub fn corrupt(&self, path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.lock();
        let Some(Entry::File(id)) = state.volatile.get(path).copied() else {
            return Err(io::ErrorKind::NotFound.into());
        };
        let inode = state.inode(id)?;
        inode.volatile.write(bytes, offset)?;
        inode.durable.write(bytes, offset)
    }

    /// Names of the files and directories below `dir` in the current state.
    pub fn list(&self, dir: &Path) -> Vec<String> {
        self.list_dir(dir).unwrap_or_default()
    }
}

#[derive(Debug)]
struct MemLock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
}

impl LockGuard for MemLock {}

impl Drop for MemLock {
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, count)) = state.locks.get_mut(&self.path) {
            *count -= 1;
            if *count == 0 {
                state.locks.remove(&self.path);
            }
        }
    }
}

impl Storage for MemStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut state = self.lock();
        let id = match (mode, state.volatile.get(path).copied()) {
            (OpenMode::CreateNew, Some(_)) => {
                state.check()?;
                return Err(io::ErrorKind::AlreadyExists.into());
            }
            (OpenMode::CreateNew, None) => {
                state.check_parent(path)?;
                state.mutate()?;
                let id = state.next_inode;
                state.next_inode += 1;
                state.inodes.insert(id, Inode::default());
                state.volatile.insert(path.to_path_buf(), Entry::File(id));
                id
            }
            (_, Some(Entry::File(id))) => {
                state.check()?;
                id
            }
            (_, Some(Entry::Dir)) => return Err(io::ErrorKind::IsADirectory.into()),
            (_, None) => {
                state.check()?;
                return Err(io::ErrorKind::NotFound.into());
            }
        };
        Ok(Arc::new(MemFile {
            state: self.state.clone(),
            inode: id,
            writable: mode != OpenMode::Read,
        }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        match state.volatile.get(path) {
            Some(Entry::File(_)) => {}
            Some(Entry::Dir) => return Err(io::ErrorKind::IsADirectory.into()),
            None => {
                state.check()?;
                return Err(io::ErrorKind::NotFound.into());
            }
        }
        state.mutate()?;
        state.volatile.remove(path);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let Some(entry) = state.volatile.get(from).copied() else {
            state.check()?;
            return Err(io::ErrorKind::NotFound.into());
        };
        state.check_parent(to)?;
        state.mutate()?;
        state.volatile.remove(from);
        state.volatile.insert(to.to_path_buf(), entry);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        if !state.is_dir(dir) {
            state.check()?;
            return Err(io::ErrorKind::NotFound.into());
        }
        state.mutate()?;
        let in_dir = |p: &PathBuf| p.parent() == Some(dir);
        state.durable.retain(|p, _| !in_dir(p));
        let entries: Vec<_> = state
            .volatile
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, e)| (p.clone(), *e))
            .collect();
        state.durable.extend(entries);
        Ok(())
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let missing: Vec<PathBuf> = dir
            .ancestors()
            .filter(|a| !a.as_os_str().is_empty() && !state.is_dir(a))
            .map(Path::to_path_buf)
            .collect();
        for path in missing.into_iter().rev() {
            if state.volatile.contains_key(&path) {
                return Err(io::ErrorKind::AlreadyExists.into());
            }
            state.mutate()?;
            state.volatile.insert(path, Entry::Dir);
        }
        state.check()
    }

    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        if state.volatile.get(dir) != Some(&Entry::Dir) {
            state.check()?;
            return Err(io::ErrorKind::NotFound.into());
        }
        if state.volatile.keys().any(|p| p.parent() == Some(dir)) {
            return Err(io::ErrorKind::DirectoryNotEmpty.into());
        }
        state.mutate()?;
        state.volatile.remove(dir);
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.lock();
        state.check()?;
        if !state.is_dir(dir) {
            return Err(io::ErrorKind::NotFound.into());
        }
        Ok(state
            .volatile
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let state = self.lock();
        state.check()?;
        Ok(state.is_dir(path) || state.volatile.contains_key(path))
    }

    fn try_lock(&self, path: &Path, mode: LockMode) -> io::Result<Option<Box<dyn LockGuard>>> {
        let mut state = self.lock();
        state.check()?;
        state.check_parent(path)?;
        if !state.volatile.contains_key(path) {
            let id = state.next_inode;
            state.next_inode += 1;
            state.inodes.insert(id, Inode::default());
            state.volatile.insert(path.to_path_buf(), Entry::File(id));
        }
        match state.locks.get_mut(path) {
            None => {
                state.locks.insert(path.to_path_buf(), (mode, 1));
            }
            Some((LockMode::Shared, count)) if mode == LockMode::Shared => *count += 1,
            Some(_) => return Ok(None),
        }
        Ok(Some(Box::new(MemLock {
            state: self.state.clone(),
            path: path.to_path_buf(),
        })))
    }
}

/// An open file of a [`MemStorage`]. Like a file descriptor, it keeps
/// referring to its inode across renames and removes.
#[derive(Debug)]
struct MemFile {
    state: Arc<Mutex<State>>,
    inode: u64,
    writable: bool,
}

impl MemFile {
    fn with<T>(
        &self,
        mutating: bool,
        f: impl FnOnce(&mut Inode) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if mutating {
            if !self.writable {
                state.check()?;
                return Err(io::Error::from_raw_os_error(libc::EBADF));
            }
            state.mutate()?;
        } else {
            state.check()?;
        }
        f(state.inode(self.inode)?)
    }
}

impl StorageFile for MemFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.with(false, |inode| inode.volatile.read(buf, offset))
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        offset
            .checked_add(buf.len() as u64)
            .ok_or(io::ErrorKind::InvalidInput)?;
        self.with(true, |inode| {
            inode.record(Pending::Write {
                offset,
                data: buf.to_vec(),
            });
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with(true, |inode| {
            inode.durable = inode.volatile.clone();
            inode.pending.clear();
            Ok(())
        })
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(true, |inode| {
            inode.record(Pending::SetLen { len });
            Ok(())
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.with(false, |inode| Ok(inode.volatile.len))
    }

    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        offset.checked_add(len).ok_or(io::ErrorKind::InvalidInput)?;
        self.with(true, |inode| {
            inode.record(Pending::Punch { offset, len });
            Ok(())
        })
    }

    fn next_data(&self, offset: u64) -> io::Result<Option<u64>> {
        self.with(false, |inode| {
            let content = &inode.volatile;
            let found = content
                .blocks
                .range(offset / BLOCK..)
                .next()
                .map(|(block, _)| (block * BLOCK).max(offset));
            Ok(found.filter(|pos| *pos < content.len))
        })
    }

    fn next_hole(&self, offset: u64) -> io::Result<u64> {
        self.with(false, |inode| {
            let content = &inode.volatile;
            let mut block = offset / BLOCK;
            while content.blocks.contains_key(&block) {
                block += 1;
            }
            Ok((block * BLOCK).max(offset).min(content.len))
        })
    }

    fn allocated_bytes(&self) -> io::Result<u64> {
        self.with(
            false,
            |inode| Ok(inode.volatile.blocks.len() as u64 * BLOCK),
        )
    }
}
