//! The durable disk spool: when Kafka cannot take accepted events, they are
//! appended here and fsync'd before the client hears 2xx, then replayed in
//! order. Append-only segment files; each record is
//! `[len u32 LE][crc32 u32 LE][payload]`, payload = topic, key, message id, value.

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::{self, Read, Write},
    path::{Path, PathBuf},
    sync::Mutex,
};

use crate::pipeline::{Record, Topic};

const SEGMENT_MAX_BYTES: u64 = 16 * 1024 * 1024;
const HEADER: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool is full ({used} of {max} bytes)")]
    Full { used: u64, max: u64 },
    #[error("spool I/O error: {0}")]
    Io(#[from] io::Error),
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    path: PathBuf,
    bytes: u64,
}

struct Inner {
    sealed: VecDeque<Segment>,
    open: Option<(Segment, File)>,
    next_seq: u64,
    used: u64,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    inner: Mutex<Inner>,
}

/// What reading a segment found: its records, and whether it ended in a
/// torn write (a crash mid-append, never acknowledged to a client).
pub struct SegmentRead {
    pub seq: u64,
    pub records: Vec<Record>,
    pub torn_tail: bool,
}

impl Spool {
    /// Opens `dir`, adopting segments left by an earlier process (including
    /// one killed with -9) for replay.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, SpoolError> {
        fs::create_dir_all(dir)?;
        let mut sealed: Vec<Segment> = Vec::new();
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            let Some(seq) = path.file_name().and_then(|n| n.to_str()).and_then(|n| {
                n.strip_prefix("segment-")?
                    .strip_suffix(".log")?
                    .parse()
                    .ok()
            }) else {
                continue;
            };
            let bytes = fs::metadata(&path)?.len();
            sealed.push(Segment { seq, path, bytes });
        }
        sealed.sort_by_key(|s| s.seq);
        let next_seq = sealed.last().map_or(0, |s| s.seq + 1);
        let used = sealed.iter().map(|s| s.bytes).sum();
        Ok(Self {
            dir: dir.to_path_buf(),
            max_bytes,
            inner: Mutex::new(Inner {
                sealed: sealed.into(),
                open: None,
                next_seq,
                used,
            }),
        })
    }

    pub fn used_bytes(&self) -> u64 {
        self.inner.lock().expect("spool lock").used
    }

    pub fn is_empty(&self) -> bool {
        let inner = self.inner.lock().expect("spool lock");
        inner.sealed.is_empty() && inner.open.is_none()
    }

    /// Appends all records or none, and fsyncs before returning.
    pub fn append(&self, records: &[Record]) -> Result<(), SpoolError> {
        let mut buf = Vec::new();
        for r in records {
            encode(r, &mut buf);
        }
        let mut inner = self.inner.lock().expect("spool lock");
        let added = buf.len() as u64;
        if inner.used + added > self.max_bytes {
            return Err(SpoolError::Full {
                used: inner.used,
                max: self.max_bytes,
            });
        }
        if inner
            .open
            .as_ref()
            .is_some_and(|(s, _)| s.bytes + added > SEGMENT_MAX_BYTES)
        {
            let (seg, _) = inner.open.take().expect("checked");
            inner.sealed.push_back(seg);
        }
        if inner.open.is_none() {
            let seq = inner.next_seq;
            inner.next_seq += 1;
            let path = self.dir.join(format!("segment-{seq:020}.log"));
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            // The new file's directory entry must survive a crash too.
            File::open(&self.dir)?.sync_all()?;
            inner.open = Some((
                Segment {
                    seq,
                    path,
                    bytes: 0,
                },
                file,
            ));
        }
        let (seg, file) = inner.open.as_mut().expect("opened above");
        file.write_all(&buf)?;
        file.sync_data()?;
        seg.bytes += added;
        inner.used += added;
        Ok(())
    }

    /// Reads the oldest segment for replay, sealing the open one if it is
    /// the only one left. New appends go to a fresh segment meanwhile.
    pub fn oldest(&self) -> Result<Option<SegmentRead>, SpoolError> {
        let path_seq = {
            let mut inner = self.inner.lock().expect("spool lock");
            if inner.sealed.is_empty()
                && let Some((seg, _)) = inner.open.take()
            {
                inner.sealed.push_back(seg);
            }
            inner.sealed.front().map(|s| (s.path.clone(), s.seq))
        };
        let Some((path, seq)) = path_seq else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        File::open(&path)?.read_to_end(&mut bytes)?;
        let (records, torn_tail) = decode_all(&bytes);
        Ok(Some(SegmentRead {
            seq,
            records,
            torn_tail,
        }))
    }

    /// Deletes a segment once every record in it is acknowledged by Kafka.
    pub fn remove(&self, seq: u64) -> Result<(), SpoolError> {
        let mut inner = self.inner.lock().expect("spool lock");
        if let Some(pos) = inner.sealed.iter().position(|s| s.seq == seq) {
            let seg = inner.sealed.remove(pos).expect("position is valid");
            fs::remove_file(&seg.path)?;
            inner.used -= seg.bytes;
        }
        Ok(())
    }
}

fn encode(r: &Record, out: &mut Vec<u8>) {
    let mut payload = Vec::with_capacity(r.payload.len() + r.key.len() + r.message_id.len() + 8);
    payload.push(match r.topic {
        Topic::Events => 0,
        Topic::Dlq => 1,
    });
    for part in [r.key.as_bytes(), r.message_id.as_bytes()] {
        payload.extend_from_slice(&(part.len() as u32).to_le_bytes());
        payload.extend_from_slice(part);
    }
    payload.extend_from_slice(&r.payload);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
}

fn decode_all(mut bytes: &[u8]) -> (Vec<Record>, bool) {
    let mut records = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < HEADER {
            return (records, true);
        }
        let len = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
        let Some(payload) = bytes.get(HEADER..HEADER + len) else {
            return (records, true);
        };
        match (crc32fast::hash(payload) == crc)
            .then(|| decode(payload))
            .flatten()
        {
            Some(r) => records.push(r),
            None => return (records, true),
        }
        bytes = &bytes[HEADER + len..];
    }
    (records, false)
}

fn decode(mut p: &[u8]) -> Option<Record> {
    let topic = match *p.first()? {
        0 => Topic::Events,
        1 => Topic::Dlq,
        _ => return None,
    };
    p = &p[1..];
    let mut take = || -> Option<String> {
        let len = u32::from_le_bytes(p.get(0..4)?.try_into().ok()?) as usize;
        let s = String::from_utf8(p.get(4..4 + len)?.to_vec()).ok()?;
        p = &p[4 + len..];
        Some(s)
    };
    let key = take()?;
    let message_id = take()?;
    Some(Record {
        topic,
        key,
        message_id,
        payload: p.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: usize) -> Record {
        Record {
            topic: if i.is_multiple_of(2) {
                Topic::Events
            } else {
                Topic::Dlq
            },
            key: format!("k{i}"),
            payload: vec![i as u8; i],
            message_id: format!("m{i}"),
        }
    }

    #[test]
    fn appends_replays_in_order_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        spool.append(&[rec(1), rec(2)]).unwrap();
        spool.append(&[rec(3)]).unwrap();
        drop(spool);
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(!spool.is_empty());
        spool.append(&[rec(4)]).unwrap();
        let first = spool.oldest().unwrap().unwrap();
        assert_eq!(first.records, vec![rec(1), rec(2), rec(3)]);
        assert!(!first.torn_tail);
        spool.remove(first.seq).unwrap();
        let second = spool.oldest().unwrap().unwrap();
        assert_eq!(second.records, vec![rec(4)]);
        spool.remove(second.seq).unwrap();
        assert!(spool.is_empty());
        assert_eq!(spool.used_bytes(), 0);
    }

    #[test]
    fn refuses_appends_beyond_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 100).unwrap();
        spool.append(&[rec(10)]).unwrap();
        assert!(matches!(
            spool.append(&[rec(60)]),
            Err(SpoolError::Full { .. })
        ));
        assert_eq!(spool.oldest().unwrap().unwrap().records, vec![rec(10)]);
    }

    #[test]
    fn a_torn_tail_is_detected_and_earlier_records_kept() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        spool.append(&[rec(5), rec(6)]).unwrap();
        drop(spool);
        let path = fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let read = Spool::open(dir.path(), 1 << 20)
            .unwrap()
            .oldest()
            .unwrap()
            .unwrap();
        assert_eq!(read.records, vec![rec(5)]);
        assert!(read.torn_tail);
    }
}
