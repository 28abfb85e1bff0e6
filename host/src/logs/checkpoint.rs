//! How far a task's logs have been forwarded, kept in a small file so a
//! relaunched plugin resumes exactly there.
//!
//! Every message the engine sends carries a nanosecond timestamp. A message
//! is identified by `(timestamp, seq)`, `seq` counting the earlier messages
//! of the same stream with the same timestamp, and a [`Position`] says how
//! many bytes of which message have been written into the FIFO. After a
//! restart the forwarder asks the engine for logs from the second of the
//! oldest position and drops everything at or before it.
//!
//! The file is rewritten in place (one `pwrite` of one fixed-size record,
//! which a killed process cannot tear) after every write. A kill can land
//! between a write and its record; the bytes of that one write would then
//! be sent twice. So each position also records how many bytes the node's
//! log holder had accepted for the stream at that point (the plugin writes
//! into the holder's pipes; see [`crate::logs::holder::relay`]): after a
//! relaunch the holder's count minus the recorded one is exactly what was
//! written past the position, and is skipped. Without a holder (or with a
//! checkpoint from before counting) a relaunch may repeat that one write.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use crate::docker::logs::Output;

/// Size of the record on disk.
const RECORD_BYTES: usize = 256;
/// First word of a record.
const MAGIC: &str = "wasmdock-log-checkpoint";

/// How far one stream has been forwarded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    /// Timestamp (Unix nanoseconds) of the last message written to, 0 when
    /// nothing has been written yet.
    pub timestamp: i64,
    /// Which of the messages with that timestamp.
    pub seq: u32,
    /// How many bytes of that message were written.
    pub offset: u32,
    /// The holder's count of the stream's bytes when this position was
    /// reached (meaningful when [`Positions::counted`]).
    pub relayed: u64,
}

/// Where both streams of a task stand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Positions {
    /// Standard output.
    pub stdout: Position,
    /// Standard error.
    pub stderr: Position,
    /// Whether the `relayed` counts match the holder's: the plugin writes
    /// through the holder and has since the counts were set.
    pub counted: bool,
}

impl Positions {
    /// The position of one stream.
    pub fn get(&self, output: Output) -> Position {
        match output {
            Output::Stdout => self.stdout,
            Output::Stderr => self.stderr,
        }
    }

    /// Sets the position of one stream.
    pub fn set(&mut self, output: Output, position: Position) {
        match output {
            Output::Stdout => self.stdout = position,
            Output::Stderr => self.stderr = position,
        }
    }

    /// The `since` (Unix seconds) to ask the engine for: the second of the
    /// oldest position, or `started_at` for a stream nothing was written
    /// to yet. Never earlier than the container's start.
    pub fn resume_since(&self, started_at_secs: i64) -> i64 {
        [self.stdout, self.stderr]
            .iter()
            .map(|p| {
                if p.timestamp == 0 {
                    started_at_secs
                } else {
                    p.timestamp.div_euclid(1_000_000_000).max(started_at_secs)
                }
            })
            .min()
            .unwrap_or(started_at_secs)
    }

    fn encode(&self) -> [u8; RECORD_BYTES] {
        let body = format!(
            "{MAGIC} v2 {} {} {} {} {} {} {} {} {}",
            u8::from(self.counted),
            self.stdout.timestamp,
            self.stdout.seq,
            self.stdout.offset,
            self.stdout.relayed,
            self.stderr.timestamp,
            self.stderr.seq,
            self.stderr.offset,
            self.stderr.relayed,
        );
        let line = format!("{body} {:016x}\n", fnv1a(body.as_bytes()));
        let mut record = [b' '; RECORD_BYTES];
        let len = line.len().min(RECORD_BYTES);
        record[..len].copy_from_slice(&line.as_bytes()[..len]);
        record[RECORD_BYTES - 1] = b'\n';
        record
    }

    /// Reads a record: version 2, or version 1 (written before the holder
    /// counted bytes: no counts).
    fn decode(record: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(record).ok()?.trim_end();
        let text = text.lines().next()?;
        let (body, sum) = text.rsplit_once(' ')?;
        if u64::from_str_radix(sum, 16).ok()? != fnv1a(body.as_bytes()) {
            return None;
        }
        let mut words = body.split(' ');
        if words.next()? != MAGIC {
            return None;
        }
        let counts = match words.next()? {
            "v1" => false,
            "v2" => true,
            _ => return None,
        };
        let mut number = || words.next()?.parse::<i128>().ok();
        let counted = if counts { number()? == 1 } else { false };
        let mut position = || {
            Some(Position {
                timestamp: i64::try_from(number()?).ok()?,
                seq: u32::try_from(number()?).ok()?,
                offset: u32::try_from(number()?).ok()?,
                relayed: if counts {
                    u64::try_from(number()?).ok()?
                } else {
                    0
                },
            })
        };
        let positions = Self {
            stdout: position()?,
            stderr: position()?,
            counted,
        };
        words.next().is_none().then_some(positions)
    }
}

/// FNV-1a, 64 bits: detects a damaged record.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Numbers a stream's messages: `(timestamp, seq)`.
#[derive(Debug, Default)]
pub struct Numbering {
    last: Option<(i64, u32)>,
}

impl Numbering {
    /// The id of the next message, stamped `timestamp`.
    pub fn next(&mut self, timestamp: i64) -> (i64, u32) {
        let id = match self.last {
            Some((last, seq)) if last == timestamp => (timestamp, seq.saturating_add(1)),
            _ => (timestamp, 0),
        };
        self.last = Some(id);
        id
    }
}

/// How many leading bytes of message `id` (of `len` bytes) were already
/// forwarded, given the stream's checkpointed position.
pub fn already_sent(position: Position, id: (i64, u32), len: usize) -> usize {
    match id.cmp(&(position.timestamp, position.seq)) {
        std::cmp::Ordering::Less => len,
        std::cmp::Ordering::Equal => len.min(position.offset as usize),
        std::cmp::Ordering::Greater => 0,
    }
}

/// Where a task's forwarding stands, kept in a file when it has one.
#[derive(Debug)]
pub struct Checkpoint {
    file: Option<(File, PathBuf)>,
    positions: Positions,
}

impl Checkpoint {
    /// The file name of `task_id`'s checkpoint: the id with unsafe bytes
    /// escaped, or a hash of it when that is too long for a file name.
    pub fn file_name(task_id: &str) -> String {
        let mut name = String::with_capacity(task_id.len() + 8);
        for byte in task_id.bytes() {
            if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
                name.push(char::from(byte));
            } else {
                name.push_str(&format!("%{byte:02x}"));
            }
        }
        if name.len() > 200 {
            name = format!("{}~{:016x}", &name[..100], fnv1a(task_id.as_bytes()));
        }
        format!("{name}.checkpoint")
    }

    /// Creates (or truncates) a checkpoint at `path` with nothing forwarded.
    pub fn create(path: &Path) -> io::Result<Self> {
        Self::open(path, Positions::default(), true)
    }

    /// Opens an existing checkpoint. `Ok(None)` when there is none or it is
    /// damaged (the caller then cannot resume exactly).
    pub fn resume(path: &Path) -> io::Result<Option<Self>> {
        let record = match std::fs::read(path) {
            Ok(record) => record,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err),
        };
        match Positions::decode(&record) {
            Some(positions) => Self::open(path, positions, false).map(Some),
            None => Ok(None),
        }
    }

    /// A checkpoint kept in memory only (no file could be made): a
    /// relaunched plugin cannot resume from it.
    pub fn in_memory(positions: Positions) -> Self {
        Self {
            file: None,
            positions,
        }
    }

    /// Whether the position is kept in a file.
    pub fn is_persistent(&self) -> bool {
        self.file.is_some()
    }

    fn open(path: &Path, positions: Positions, create: bool) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(path)?;
        if create {
            file.set_len(0)?;
        }
        let checkpoint = Self {
            file: Some((file, path.to_owned())),
            positions,
        };
        if create {
            checkpoint.write()?;
        }
        Ok(checkpoint)
    }

    /// Where forwarding stands.
    pub fn positions(&self) -> Positions {
        self.positions
    }

    /// Records a new position of one stream.
    pub fn store(&mut self, output: Output, position: Position) -> io::Result<()> {
        self.positions.set(output, position);
        self.write()
    }

    /// Sets both streams' holder counts (a new holder starts at zero; an
    /// uncounted checkpoint adopts the holder's figures) and whether they
    /// are kept from now on.
    pub fn set_counts(&mut self, relayed: [u64; 2], counted: bool) -> io::Result<()> {
        self.positions.stdout.relayed = relayed[0];
        self.positions.stderr.relayed = relayed[1];
        self.positions.counted = counted;
        self.write()
    }

    fn write(&self) -> io::Result<()> {
        match &self.file {
            Some((file, _)) => file.write_all_at(&self.positions.encode(), 0),
            None => Ok(()),
        }
    }

    /// Deletes the file: the task's forwarding is over.
    pub fn remove(self) {
        if let Some((_, path)) = self.file
            && let Err(err) = std::fs::remove_file(&path)
            && err.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %err, "cannot remove a log checkpoint");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_detected() {
        let positions = Positions {
            stdout: Position {
                timestamp: 1_795_392_356_123_456_789,
                seq: 2,
                offset: 17,
                relayed: u64::MAX / 3,
            },
            stderr: Position {
                timestamp: i64::MAX,
                seq: u32::MAX,
                offset: u32::MAX,
                relayed: u64::MAX,
            },
            counted: true,
        };
        let record = positions.encode();
        assert_eq!(record.len(), RECORD_BYTES);
        assert!(record.ends_with(b" \n"), "the widest record fits");
        assert_eq!(Positions::decode(&record), Some(positions));
        let mut damaged = record;
        damaged[30] = b'9';
        assert_eq!(Positions::decode(&damaged), None);
        assert_eq!(Positions::decode(b""), None);
        assert_eq!(
            Positions::decode(b"wasmdock-log-checkpoint v3 1 2 3 4 5 6 0\n"),
            None
        );
    }

    #[test]
    fn version_one_records_still_read_without_counts() {
        let body = "wasmdock-log-checkpoint v1 10 1 4 20 0 7";
        let record = format!("{body} {:016x}\n", fnv1a(body.as_bytes()));
        let positions = Positions::decode(record.as_bytes()).expect("a v1 record");
        assert!(!positions.counted);
        assert_eq!(
            positions.stdout,
            Position {
                timestamp: 10,
                seq: 1,
                offset: 4,
                relayed: 0
            }
        );
        assert_eq!(positions.stderr.offset, 7);
    }

    #[test]
    fn the_file_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(Checkpoint::file_name("alloc/web/1"));
        let mut checkpoint = Checkpoint::create(&path).unwrap();
        checkpoint.set_counts([0, 0], true).unwrap();
        let at = Position {
            timestamp: 5,
            seq: 0,
            offset: 3,
            relayed: 3,
        };
        checkpoint.store(Output::Stderr, at).unwrap();
        drop(checkpoint);
        let resumed = Checkpoint::resume(&path).unwrap().expect("a checkpoint");
        assert_eq!(resumed.positions().stderr, at);
        assert!(resumed.positions().counted);
        assert_eq!(resumed.positions().stdout, Position::default());
        resumed.remove();
        assert!(Checkpoint::resume(&path).unwrap().is_none());
    }

    #[test]
    fn file_names_are_flat_and_bounded() {
        let name = Checkpoint::file_name("4f1c/web server/abc");
        assert_eq!(name, "4f1c%2fweb%20server%2fabc.checkpoint");
        let long = Checkpoint::file_name(&"/".repeat(300));
        assert!(long.len() < 255 && !long.contains('/'), "{long}");
        assert_ne!(long, Checkpoint::file_name(&"/".repeat(301)));
    }

    #[test]
    fn messages_are_numbered_within_a_timestamp() {
        let mut numbering = Numbering::default();
        assert_eq!(numbering.next(10), (10, 0));
        assert_eq!(numbering.next(10), (10, 1));
        assert_eq!(numbering.next(11), (11, 0));
        assert_eq!(numbering.next(11), (11, 1));
    }

    #[test]
    fn what_was_sent_is_skipped_to_the_byte() {
        let at = Position {
            timestamp: 10,
            seq: 1,
            offset: 4,
            relayed: 0,
        };
        assert_eq!(already_sent(at, (9, 7), 20), 20, "older: all sent");
        assert_eq!(already_sent(at, (10, 0), 20), 20, "earlier twin: all sent");
        assert_eq!(already_sent(at, (10, 1), 20), 4, "the message in flight");
        assert_eq!(already_sent(at, (10, 1), 3), 3, "never more than it has");
        assert_eq!(already_sent(at, (10, 2), 20), 0, "later twin: none");
        assert_eq!(already_sent(at, (11, 0), 20), 0, "newer: none");
        assert_eq!(already_sent(Position::default(), (1, 0), 5), 0, "fresh");
    }

    #[test]
    fn resume_never_reaches_before_the_start() {
        let fresh = Positions::default();
        assert_eq!(fresh.resume_since(1000), 1000);
        let mixed = Positions {
            stdout: Position {
                timestamp: 1_500_900_000_000,
                seq: 0,
                offset: 1,
                relayed: 0,
            },
            ..Positions::default()
        };
        assert_eq!(mixed.resume_since(1000), 1000);
        assert_eq!(mixed.resume_since(1400), 1400);
        let both = Positions {
            stdout: mixed.stdout,
            stderr: Position {
                timestamp: 1_200_000_000_000,
                seq: 0,
                offset: 0,
                relayed: 0,
            },
            counted: false,
        };
        assert_eq!(both.resume_since(1000), 1200);
    }
}
