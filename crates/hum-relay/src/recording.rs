//! Recordings of live streams, on disk beside the database (docs/stream.md, "Recordings").
//!
//! ```text
//! DATA_DIR/recordings/
//!   blocks/ab/abcdef...   one file per distinct chunk payload, named by its BLAKE3 hash (dedup)
//!   17/meta.json          the recording's RecordingInfo (chunks/bytes filled in when listed)
//!   17/manifest           the signed ChunkRecords, one fixed-size entry per chunk, in order
//! ```
//!
//! Crash safety (kill -9): a block is written to a temporary name and renamed, so a block file
//! is whole or absent; a manifest entry is appended only after its block is in place, so every
//! entry names a block that exists; a torn last entry (the process died mid-append) is ignored
//! when read. `meta.json` is replaced by rename. Recordings that were live when the relay died
//! are marked ended when it starts again. (Power loss is a different matter: nothing is fsynced.)
//! Readers check nothing here: every record is the streamer's signed record, and whoever plays
//! a recording verifies it against the streamer's key, as for a live stream.
//!
//! The metadata lives with the blocks rather than in SQLite so a recording is one directory:
//! created, listed and deleted without a second store to keep consistent.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hum_mesh::{ChunkRecord, MeshMsg};
use hum_proto::ServerId;
use hum_proto::signal::RecordingInfo;

/// One manifest entry: the record in `MeshMsg::Data` framing with an empty payload (the mesh's
/// own, fuzzed, encoding of a record).
fn entry_bytes(rec: &ChunkRecord) -> Vec<u8> {
    MeshMsg::Data {
        record: Arc::new(*rec),
        hops: 0,
        payload: Arc::from(&[][..]),
    }
    .encode()
    .unwrap_or_default()
}

fn entry_len() -> usize {
    entry_bytes(&ChunkRecord {
        layer: hum_mesh::Layer::High,
        seq: 0,
        hash: [0; 32],
        bytes: 0,
        start_us: 0,
        duration_us: 0,
        flags: 0,
        signature: [0; 64],
    })
    .len()
}

fn parse_entry(b: &[u8]) -> Option<ChunkRecord> {
    match MeshMsg::decode(b).ok()? {
        MeshMsg::Data { record, .. } => Some(*record),
        _ => None,
    }
}

/// The recordings directory.
#[derive(Debug, Clone)]
pub struct Recordings {
    dir: PathBuf,
}

impl Recordings {
    /// Opens (creating) `DATA_DIR/recordings`; marks recordings left live by a crash as ended and
    /// removes temporary files.
    pub fn open(data_dir: &Path) -> io::Result<Recordings> {
        let dir = data_dir.join("recordings");
        fs::create_dir_all(dir.join("blocks"))?;
        let r = Recordings { dir };
        for id in r.ids()? {
            if let Some(mut m) = r.meta(id)
                && !m.ended
            {
                m.ended = true;
                r.write_meta(&m)?;
            }
        }
        for sub in fs::read_dir(r.dir.join("blocks"))? {
            let sub = sub?.path();
            if sub.is_dir() {
                for f in fs::read_dir(&sub)? {
                    let f = f?.path();
                    if f.extension().is_some_and(|e| e == "tmp") {
                        let _ = fs::remove_file(f);
                    }
                }
            }
        }
        Ok(r)
    }

    fn ids(&self) -> io::Result<Vec<u64>> {
        let mut ids: Vec<u64> = fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    fn rec_dir(&self, id: u64) -> PathBuf {
        self.dir.join(id.to_string())
    }

    fn block_path(&self, hash: &[u8; 32]) -> PathBuf {
        let h = hex::encode(hash);
        self.dir.join("blocks").join(&h[..2]).join(h)
    }

    fn write_meta(&self, m: &RecordingInfo) -> io::Result<()> {
        let d = self.rec_dir(m.id);
        let tmp = d.join("meta.json.tmp");
        fs::write(&tmp, serde_json::to_vec(m).map_err(io::Error::other)?)?;
        fs::rename(tmp, d.join("meta.json"))
    }

    /// The stored metadata (chunks and bytes not filled in).
    pub fn meta(&self, id: u64) -> Option<RecordingInfo> {
        let b = fs::read(self.rec_dir(id).join("meta.json")).ok()?;
        serde_json::from_slice(&b).ok()
    }

    /// A new recording with the next free id (`m.id` is ignored).
    pub fn create(&self, mut m: RecordingInfo) -> io::Result<RecordingInfo> {
        let id = self.ids()?.last().map_or(1, |l| l + 1);
        m.id = id;
        m.chunks = 0;
        m.bytes = 0;
        m.ended = false;
        fs::create_dir_all(self.rec_dir(id))?;
        File::create(self.rec_dir(id).join("manifest"))?;
        self.write_meta(&m)?;
        Ok(m)
    }

    pub fn end(&self, id: u64) -> io::Result<()> {
        if let Some(mut m) = self.meta(id) {
            m.ended = true;
            self.write_meta(&m)?;
        }
        Ok(())
    }

    /// Every whole, parseable manifest entry, in order.
    fn records(&self, id: u64) -> io::Result<Vec<ChunkRecord>> {
        let b = fs::read(self.rec_dir(id).join("manifest"))?;
        let n = entry_len();
        Ok(b.chunks_exact(n).map_while(parse_entry).collect())
    }

    /// `m` with `chunks` and `bytes` from its manifest.
    fn filled(&self, mut m: RecordingInfo) -> RecordingInfo {
        let recs = self.records(m.id).unwrap_or_default();
        m.chunks = recs.len() as u64;
        m.bytes = recs.iter().map(|r| u64::from(r.bytes)).sum();
        m
    }

    pub fn info(&self, id: u64) -> Option<RecordingInfo> {
        self.meta(id).map(|m| self.filled(m))
    }

    /// The recordings of `server`, oldest first.
    pub fn list(&self, server: ServerId) -> Vec<RecordingInfo> {
        self.ids()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|id| self.meta(id))
            .filter(|m| m.server == server)
            .map(|m| self.filled(m))
            .collect()
    }

    /// Deletes the recording, then the blocks no other recording uses.
    pub fn delete(&self, id: u64) -> io::Result<()> {
        let mine = self.records(id).unwrap_or_default();
        let trash = self.dir.join(format!("{id}.deleted"));
        fs::rename(self.rec_dir(id), &trash)?;
        let _ = fs::remove_dir_all(&trash);
        let mut used = std::collections::BTreeSet::new();
        for other in self.ids()? {
            for r in self.records(other).unwrap_or_default() {
                used.insert(r.hash);
            }
        }
        for r in mine {
            if !used.contains(&r.hash) {
                let _ = fs::remove_file(self.block_path(&r.hash));
            }
        }
        Ok(())
    }

    /// Chunk `index` (0-based position in the manifest) with its record.
    pub fn chunk(&self, id: u64, index: u64) -> io::Result<Option<(ChunkRecord, Vec<u8>)>> {
        let n = entry_len() as u64;
        let mut f = match File::open(self.rec_dir(id).join("manifest")) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if f.metadata()?.len() < (index + 1) * n {
            return Ok(None);
        }
        f.seek(SeekFrom::Start(index * n))?;
        let mut b = vec![0; n as usize];
        f.read_exact(&mut b)?;
        let Some(rec) = parse_entry(&b) else {
            return Ok(None);
        };
        let payload = fs::read(self.block_path(&rec.hash))?;
        Ok(Some((rec, payload)))
    }

    /// Appends to recording `id`.
    pub fn writer(&self, id: u64) -> io::Result<RecordingWriter> {
        let manifest = OpenOptions::new()
            .append(true)
            .open(self.rec_dir(id).join("manifest"))?;
        Ok(RecordingWriter {
            rec: self.clone(),
            manifest,
            new_blocks: 0,
            dedup: 0,
        })
    }
}

/// Appends chunks (already verified by the caller) to one recording.
#[derive(Debug)]
pub struct RecordingWriter {
    rec: Recordings,
    manifest: File,
    /// Blocks written, and chunks whose block was already there.
    pub new_blocks: u64,
    pub dedup: u64,
}

impl RecordingWriter {
    pub fn append(&mut self, rec: &ChunkRecord, payload: &[u8]) -> io::Result<()> {
        let path = self.rec.block_path(&rec.hash);
        if path.exists() {
            self.dedup += 1;
        } else {
            if let Some(d) = path.parent() {
                fs::create_dir_all(d)?;
            }
            let tmp = path.with_extension("tmp");
            fs::write(&tmp, payload)?;
            fs::rename(&tmp, &path)?;
            self.new_blocks += 1;
        }
        self.manifest.write_all(&entry_bytes(rec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hum_mesh::chunker::Chunk;
    use hum_mesh::manifest::Publisher;
    use hum_proto::signal::{Name, UserSummary};
    use hum_proto::{Bitrate, ChannelId, StreamId, UserId};

    fn info() -> RecordingInfo {
        RecordingInfo {
            id: 0,
            stream: StreamId(1),
            server: ServerId(3),
            channel: ChannelId(5),
            streamer: UserSummary {
                id: UserId([1; 32]),
                display_name: hum_proto::signal::DisplayName::new("ada").unwrap(),
            },
            title: Name::new("t").unwrap(),
            bitrate: Bitrate::from_kbps(300),
            chunk_ms: 250,
            started_ms: 1,
            chunks: 0,
            bytes: 0,
            ended: false,
            layer: None,
        }
    }

    #[test]
    fn chunks_are_deduplicated_survive_a_torn_tail_and_deletion_keeps_shared_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let p = Publisher::from_seed([3; 32]);
        let chunk = |seq: u64, body: &[u8]| {
            let c = Chunk::new(
                hum_mesh::Layer::High,
                seq,
                seq * 250_000,
                250_000,
                true,
                Arc::from(body),
            );
            (p.sign(&c, body.len() as u32), c.payload)
        };
        let r = Recordings::open(dir.path()).unwrap();
        let a = r.create(info()).unwrap();
        let b = r.create(info()).unwrap();
        assert_eq!((a.id, b.id), (1, 2));
        let mut wa = r.writer(a.id).unwrap();
        let (r0, p0) = chunk(0, b"same");
        let (r1, p1) = chunk(1, b"other");
        wa.append(&r0, &p0).unwrap();
        wa.append(&r1, &p1).unwrap();
        let mut wb = r.writer(b.id).unwrap();
        wb.append(&r0, &p0).unwrap();
        assert_eq!((wa.new_blocks, wb.dedup), (2, 1));
        // A torn append (the process died in the middle) is not an entry.
        let mut m = OpenOptions::new()
            .append(true)
            .open(r.rec_dir(a.id).join("manifest"))
            .unwrap();
        m.write_all(&entry_bytes(&r1)[..10]).unwrap();
        drop((wa, wb, m));
        // Reopening (as after kill -9) ends live recordings and keeps every whole chunk.
        let r = Recordings::open(dir.path()).unwrap();
        let la = r.info(a.id).unwrap();
        assert!(la.ended);
        assert_eq!((la.chunks, la.bytes), (2, 9));
        assert_eq!(r.chunk(a.id, 1).unwrap(), Some((r1, p1.to_vec())));
        assert_eq!(r.chunk(a.id, 2).unwrap(), None);
        assert_eq!(r.list(ServerId(3)).len(), 2);
        assert!(r.list(ServerId(4)).is_empty());
        // Deleting `a` removes its own block but keeps the one `b` shares.
        r.delete(a.id).unwrap();
        assert!(r.info(a.id).is_none());
        assert!(!r.block_path(&r1.hash).exists());
        assert_eq!(r.chunk(b.id, 0).unwrap(), Some((r0, p0.to_vec())));
        // A new recording does not reuse a live id.
        assert_eq!(r.create(info()).unwrap().id, 3);
    }
}
