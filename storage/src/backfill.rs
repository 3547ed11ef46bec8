//! Building blocks offline, for `promflow tsdb create-blocks-from`: samples go into a private
//! in-memory head (compressed chunks, no WAL) and are written out as one block.

use std::path::Path;

use crate::db::{write_head_block, BLOCKS_DIR, PROMFLOW_DIR};
use crate::head::{index_hash, pack_labels, AppendResult, Head, SeriesRef};
use crate::{Error, Labels, Timestamp};

/// Collects the samples of one block and writes it into a data directory.
///
/// Like Prometheus's block writer, each series' samples must come in time order: an older
/// sample is [`Error::OutOfOrder`], a different value at the same timestamp is
/// [`Error::DuplicateTimestamp`], and an exact repeat is ignored.
#[derive(Debug, Default)]
pub struct BlockBuilder {
    head: Head,
    next_ref: SeriesRef,
    samples: u64,
    /// Scratch space for a series' labels, packed to be hashed.
    packed: Vec<u8>,
}

impl BlockBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one sample of the series `labels`.
    pub fn append(&mut self, labels: &Labels, t: Timestamp, v: f64) -> Result<(), Error> {
        if labels.is_empty() || labels.metric_name().is_empty() {
            return Err(Error::InvalidLabels(format!("series {labels} has no metric name")));
        }
        self.packed.clear();
        pack_labels(labels, &mut self.packed);
        let hash = index_hash(&self.packed);
        let r = match self.head.lookup(labels, hash) {
            Some(r) => r,
            None => {
                let r = self.next_ref;
                self.next_ref += 1;
                self.head
                    .create(r, labels, hash)
                    .ok_or_else(|| Error::InvalidLabels(format!("series {labels} could not be added")))?
            }
        };
        match self.head.append(r, t, v) {
            AppendResult::Appended => {
                self.samples += 1;
                Ok(())
            }
            AppendResult::Ignored => Ok(()),
            AppendResult::OutOfOrder => Err(Error::OutOfOrder),
            AppendResult::Duplicate => Err(Error::DuplicateTimestamp),
            AppendResult::UnknownSeries => Err(Error::InvalidLabels(format!("series {labels} vanished"))),
        }
    }

    /// Samples added so far.
    pub fn num_samples(&self) -> u64 {
        self.samples
    }

    /// Writes the block into `<data_dir>/promflow/blocks/` (covering its samples' span) and
    /// returns its description, or `None` when no sample was added. The block is complete
    /// on disk before its directory gets its final name.
    pub fn write(self, data_dir: &Path) -> Result<Option<crate::BlockInfo>, Error> {
        let dir = data_dir.join(PROMFLOW_DIR).join(BLOCKS_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| Error::Io(format!("creating {}", dir.display()), e))?;
        let Some(meta) = write_head_block(&dir, || &self.head, Timestamp::MIN, Timestamp::MAX)? else {
            return Ok(None);
        };
        let size = crate::block::dir_size(&dir.join(&meta.ulid));
        Ok(Some(crate::BlockInfo::new(&meta, size)))
    }
}
