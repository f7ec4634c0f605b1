//! The bodies of the fuzz targets. Each takes arbitrary bytes and runs
//! them through the parsers of `lamina-format`. None may panic, whatever
//! the input; errors are the expected outcome for most inputs.
//!
//! `format/tests/fuzz_corpus.rs` includes this file to replay the
//! committed corpora on the stable toolchain.

use lamina_format::bat::{EntryChecker, decode_raw_page, pages_for_clusters};
use lamina_format::header::HEADER_BLOCK_SIZE;
use lamina_format::{BAT_PAGE_SIZE, BatEntry, BatPage, Descriptor, ENTRIES_PER_PAGE, Header};

/// Decodes a delta header and, when it is valid, re-encodes it and checks
/// that the encoding decodes to the same header.
pub fn header(data: &[u8]) {
    let Ok(header) = Header::decode(data) else {
        return;
    };
    let _ = header.check_file_len(data.len() as u64);
    let again = Header::decode(&header.encode());
    assert_eq!(again.ok(), Some(header), "re-encoded header differs");
}

/// Decodes one BAT page as page 0 and as page 1; a page that decodes must
/// encode to bytes that decode to the same page.
pub fn bat_page(data: &[u8]) {
    for index in [0, 1] {
        if let Ok(page) = BatPage::decode(data, index) {
            let again = BatPage::decode(&page.encode(), index);
            assert!(again.is_ok(), "re-encoded page {index} does not decode");
        }
    }
}

/// Parses a descriptor and walks the chain of every node.
pub fn descriptor(data: &[u8]) {
    let Ok(descriptor) = Descriptor::parse(data) else {
        return;
    };
    for node in &descriptor.deltas {
        let _ = descriptor.chain(node.uuid);
        let _ = descriptor.children(node.uuid).count();
        let _ = descriptor.find(&node.uuid.to_string());
    }
    let again = Descriptor::parse(&descriptor.to_json());
    assert_eq!(
        again.ok(),
        Some(descriptor),
        "re-serialized descriptor differs"
    );
}

/// Opens `data` as a whole delta file the way the engine does: decode the
/// header, bound the BAT by the file length, then decode every BAT page
/// and check every entry against the layout.
pub fn delta(data: &[u8]) {
    let Ok(header) = Header::decode(data) else {
        return;
    };
    let file_len = data.len() as u64;
    if header.check_file_len(file_len).is_err() {
        return;
    }

    let cluster_size = header.geometry.cluster_size();
    let mut checker = EntryChecker::new(
        cluster_size,
        header.clusters(),
        header.data_offset,
        file_len,
    );
    let page_size = BAT_PAGE_SIZE as u64;
    for page in 0..pages_for_clusters(header.clusters()) {
        let Some(start) = page
            .checked_mul(page_size)
            .and_then(|offset| offset.checked_add(HEADER_BLOCK_SIZE))
        else {
            return;
        };
        let Some(bytes) = usize::try_from(start).ok().and_then(|s| data.get(s..)) else {
            return;
        };
        let Ok(raw) = decode_raw_page(bytes, page) else {
            return;
        };
        for (slot, value) in raw.into_iter().enumerate() {
            let cluster = page * ENTRIES_PER_PAGE as u64 + slot as u64;
            let Some(entry) = BatEntry::decode(value) else {
                return;
            };
            if entry != BatEntry::Absent && checker.check(cluster, entry).is_err() {
                return;
            }
        }
    }
}
