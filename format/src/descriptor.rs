//! The disk descriptor (`disk.json`): geometry, the tree of deltas with
//! their snapshot metadata, and which delta is the writable top.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::FormatError;
use crate::header::Geometry;

/// The only descriptor version this build reads and writes.
pub const DESCRIPTOR_VERSION: u32 = 1;
/// File name of the descriptor inside a disk directory.
pub const DESCRIPTOR_FILE: &str = "disk.json";
/// Longest chain from base to top: the engine keeps a delta's level in
/// one byte.
pub const MAX_CHAIN_DEPTH: usize = 255;

/// Why a descriptor was rejected.
#[derive(Debug, thiserror::Error)]
pub enum DescriptorError {
    /// The JSON does not parse into a descriptor.
    #[error("descriptor is not valid JSON for this format")]
    Json {
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// The descriptor has a version this build does not read.
    #[error("unknown descriptor version {found}; this build reads version {supported}")]
    UnknownVersion {
        /// Version in the descriptor.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The geometry is invalid.
    #[error("descriptor geometry is invalid")]
    Geometry {
        /// What is wrong with it.
        #[source]
        source: FormatError,
    },
    /// Two nodes have one UUID.
    #[error("delta {uuid} appears twice")]
    DuplicateUuid {
        /// The repeated UUID.
        uuid: Uuid,
    },
    /// Two nodes use one delta file.
    #[error("delta file {file} is used by two deltas")]
    DuplicateFile {
        /// The repeated file name.
        file: String,
    },
    /// Two nodes have one snapshot name.
    #[error("snapshot name {name:?} is used twice")]
    DuplicateName {
        /// The repeated name.
        name: String,
    },
    /// A node names a parent that is not in the descriptor.
    #[error("delta {uuid} names parent {parent}, which is not in the descriptor")]
    MissingParent {
        /// The node.
        uuid: Uuid,
        /// Its missing parent.
        parent: Uuid,
    },
    /// Following parents from a node leads back to it.
    #[error("the parents of delta {uuid} form a cycle")]
    Cycle {
        /// A node on the cycle.
        uuid: Uuid,
    },
    /// A chain is deeper than the engine supports.
    #[error("the chain ending at {uuid} has {depth} deltas; at most {max} are supported")]
    ChainTooDeep {
        /// The last delta of the chain.
        uuid: Uuid,
        /// Its depth.
        depth: usize,
        /// The maximal depth.
        max: usize,
    },
    /// The top names no node.
    #[error("top delta {top} is not in the descriptor")]
    TopNotFound {
        /// The top UUID.
        top: Uuid,
    },
    /// A delta file name is not a plain file name.
    #[error("delta {uuid} has file name {file:?}; use a plain name without '/'")]
    BadFileName {
        /// The node.
        uuid: Uuid,
        /// Its file name.
        file: String,
    },
    /// A snapshot name looks like a UUID, so lookups would be ambiguous.
    #[error("snapshot name {name:?} is a UUID; choose another name")]
    NameIsUuid {
        /// The name.
        name: String,
    },
}

/// One delta of the tree: a snapshot, or the writable top.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The delta's UUID, equal to the one in its header.
    pub uuid: Uuid,
    /// The delta below it, `None` for a base.
    pub parent: Option<Uuid>,
    /// The delta file's name inside the disk directory.
    pub file: String,
    /// Snapshot name, unique within the disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Free-form snapshot description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// When the snapshot was taken (for the top: when it was created), in
    /// seconds since the Unix epoch.
    pub created: u64,
}

/// The parsed disk descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// Descriptor format version.
    pub version: u32,
    /// Virtual size of the current top in bytes.
    pub virtual_size: u64,
    /// Cluster size of every delta in bytes.
    pub cluster_size: u64,
    /// UUID of the writable top delta.
    pub top: Uuid,
    /// Every delta of the tree, in no particular order.
    pub deltas: Vec<Node>,
}

impl Descriptor {
    /// Parses and validates a descriptor.
    pub fn parse(bytes: &[u8]) -> Result<Descriptor, DescriptorError> {
        let descriptor: Descriptor =
            serde_json::from_slice(bytes).map_err(|source| DescriptorError::Json { source })?;
        descriptor.validate()?;
        Ok(descriptor)
    }

    /// Serializes the descriptor as pretty JSON with a final newline.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain structs with string keys cannot fail.
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Checks geometry, uniqueness of UUIDs, files and names, that every
    /// parent exists, that there are no cycles and that the top exists.
    pub fn validate(&self) -> Result<(), DescriptorError> {
        if self.version != DESCRIPTOR_VERSION {
            return Err(DescriptorError::UnknownVersion {
                found: self.version,
                supported: DESCRIPTOR_VERSION,
            });
        }
        Geometry::new(self.cluster_size, self.virtual_size)
            .map_err(|source| DescriptorError::Geometry { source })?;
        self.check_unique()?;

        let parents: HashMap<Uuid, Option<Uuid>> =
            self.deltas.iter().map(|n| (n.uuid, n.parent)).collect();
        for node in &self.deltas {
            if let Some(parent) = node.parent
                && !parents.contains_key(&parent)
            {
                return Err(DescriptorError::MissingParent {
                    uuid: node.uuid,
                    parent,
                });
            }
        }
        for node in &self.deltas {
            chain_depth(&parents, node.uuid)?;
        }
        if !parents.contains_key(&self.top) {
            return Err(DescriptorError::TopNotFound { top: self.top });
        }
        Ok(())
    }

    fn check_unique(&self) -> Result<(), DescriptorError> {
        let mut uuids = HashSet::new();
        let mut files = HashSet::new();
        let mut names = HashSet::new();
        for node in &self.deltas {
            if !uuids.insert(node.uuid) {
                return Err(DescriptorError::DuplicateUuid { uuid: node.uuid });
            }
            if !is_plain_file_name(&node.file) {
                return Err(DescriptorError::BadFileName {
                    uuid: node.uuid,
                    file: node.file.clone(),
                });
            }
            if !files.insert(node.file.as_str()) {
                return Err(DescriptorError::DuplicateFile {
                    file: node.file.clone(),
                });
            }
            if let Some(name) = &node.name {
                check_snapshot_name(name)?;
                if !names.insert(name.as_str()) {
                    return Err(DescriptorError::DuplicateName { name: name.clone() });
                }
            }
        }
        Ok(())
    }

    /// Returns the node with this UUID.
    pub fn node(&self, uuid: Uuid) -> Option<&Node> {
        self.deltas.iter().find(|n| n.uuid == uuid)
    }

    /// Returns the node with this UUID, mutably.
    pub fn node_mut(&mut self, uuid: Uuid) -> Option<&mut Node> {
        self.deltas.iter_mut().find(|n| n.uuid == uuid)
    }

    /// Finds a node by UUID (any form `Uuid::parse_str` takes) or by name.
    pub fn find(&self, id_or_name: &str) -> Option<&Node> {
        if let Ok(uuid) = Uuid::parse_str(id_or_name) {
            return self.node(uuid);
        }
        self.deltas
            .iter()
            .find(|n| n.name.as_deref() == Some(id_or_name))
    }

    /// Returns the children of a node.
    pub fn children(&self, uuid: Uuid) -> impl Iterator<Item = &Node> {
        self.deltas.iter().filter(move |n| n.parent == Some(uuid))
    }

    /// Returns the chain from the base up to `uuid`, base first. The
    /// descriptor must have passed [`Descriptor::validate`], so the walk
    /// ends; it still stops after `MAX_CHAIN_DEPTH` steps.
    pub fn chain(&self, uuid: Uuid) -> Result<Vec<&Node>, DescriptorError> {
        let mut chain = Vec::new();
        let mut next = Some(uuid);
        while let Some(current) = next {
            if chain.len() == MAX_CHAIN_DEPTH {
                return Err(DescriptorError::ChainTooDeep {
                    uuid,
                    depth: chain.len() + 1,
                    max: MAX_CHAIN_DEPTH,
                });
            }
            let node = self
                .node(current)
                .ok_or(DescriptorError::TopNotFound { top: current })?;
            chain.push(node);
            next = node.parent;
        }
        chain.reverse();
        Ok(chain)
    }
}

/// Checks that a snapshot name is non-empty and does not parse as a UUID.
pub fn check_snapshot_name(name: &str) -> Result<(), DescriptorError> {
    if name.is_empty() || Uuid::parse_str(name).is_ok() {
        return Err(DescriptorError::NameIsUuid {
            name: name.to_string(),
        });
    }
    Ok(())
}

fn is_plain_file_name(file: &str) -> bool {
    !file.is_empty() && file != "." && file != ".." && !file.contains(['/', '\0'])
}

/// Walks from `uuid` to its root and returns the chain depth, or an error
/// on a cycle or a too deep chain.
fn chain_depth(
    parents: &HashMap<Uuid, Option<Uuid>>,
    uuid: Uuid,
) -> Result<usize, DescriptorError> {
    let mut depth = 0;
    let mut next = Some(uuid);
    while let Some(current) = next {
        depth += 1;
        if depth > parents.len() {
            return Err(DescriptorError::Cycle { uuid });
        }
        if depth > MAX_CHAIN_DEPTH {
            return Err(DescriptorError::ChainTooDeep {
                uuid,
                depth,
                max: MAX_CHAIN_DEPTH,
            });
        }
        next = parents.get(&current).copied().flatten();
    }
    Ok(depth)
}
