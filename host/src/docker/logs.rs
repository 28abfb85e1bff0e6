//! Following a container's output through the engine's logs API.
//!
//! Logs are asked for with `timestamps=true`: the engine then prefixes every
//! log message (one line, or one piece of a line longer than 16 KiB) with
//! its RFC 3339 timestamp and a space. The timestamp is what lets a
//! forwarder know exactly which messages it has already delivered after a
//! restart; it is parsed here and stripped from the bytes.

use std::pin::Pin;

use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptionsBuilder;
use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio_stream::Stream;

use super::{Docker, DockerError, Result};

/// Which of the container's outputs a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Standard output (everything, for a TTY container).
    Stdout,
    /// Standard error.
    Stderr,
}

/// One log message of a container, demultiplexed by the engine's 8-byte
/// frame headers (or raw, for TTY containers, all on stdout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogMessage {
    /// The stream it was written to.
    pub output: Output,
    /// When the engine received it, in nanoseconds since the Unix epoch;
    /// `None` when the engine sent no parseable timestamp.
    pub timestamp: Option<i64>,
    /// The bytes the container wrote.
    pub body: Bytes,
}

/// A container's output as it is written.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<LogMessage>> + Send>>;

/// The engine splits lines longer than this into several messages, each
/// with its own timestamp (Docker's log copier buffer).
const PARTIAL_MESSAGE_BYTES: usize = 16 * 1024;

impl Docker {
    /// Follows `container`'s stdout and stderr, with timestamps, from
    /// `since` (Unix seconds; 0 means from the container's beginning) until
    /// the container stops.
    pub fn follow_logs(&self, container: &str, since: i64) -> LogStream {
        let options = LogsOptionsBuilder::new()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .timestamps(true)
            .since(i32::try_from(since).unwrap_or(i32::MAX))
            .build();
        Box::pin(self.api().logs(container, Some(options)).flat_map(|item| {
            let messages = match item {
                Ok(LogOutput::StdOut { message }) => {
                    vec![Ok(framed(Output::Stdout, message))]
                }
                Ok(LogOutput::StdErr { message }) => {
                    vec![Ok(framed(Output::Stderr, message))]
                }
                Ok(LogOutput::Console { message }) => raw(message).into_iter().map(Ok).collect(),
                Ok(LogOutput::StdIn { .. }) => Vec::new(),
                Err(err) => vec![Err(DockerError::from(err))],
            };
            futures_util::stream::iter(messages)
        }))
    }
}

/// A message of a non-TTY container: one frame is one message.
fn framed(output: Output, frame: Bytes) -> LogMessage {
    match split_timestamp(&frame) {
        Some((timestamp, at)) => LogMessage {
            output,
            timestamp: Some(timestamp),
            body: frame.slice(at..),
        },
        None => LogMessage {
            output,
            timestamp: None,
            body: frame,
        },
    }
}

/// Messages of a TTY container. The raw stream has no frames; the client
/// library hands it over line by line, so a piece of an over-long line
/// (which has no newline) arrives glued to the next message. Such a piece
/// is exactly [`PARTIAL_MESSAGE_BYTES`] long, which is where the next
/// timestamp is looked for.
fn raw(mut chunk: Bytes) -> Vec<LogMessage> {
    let mut messages = Vec::new();
    loop {
        let Some((timestamp, at)) = split_timestamp(&chunk) else {
            messages.push(LogMessage {
                output: Output::Stdout,
                timestamp: None,
                body: chunk,
            });
            return messages;
        };
        let rest = chunk.slice(at..);
        let next = rest
            .get(PARTIAL_MESSAGE_BYTES..)
            .filter(|_| !rest[..PARTIAL_MESSAGE_BYTES].contains(&b'\n'))
            .and_then(split_timestamp)
            .map(|_| PARTIAL_MESSAGE_BYTES);
        match next {
            Some(end) => {
                messages.push(LogMessage {
                    output: Output::Stdout,
                    timestamp: Some(timestamp),
                    body: rest.slice(..end),
                });
                chunk = rest.slice(end..);
            }
            None => {
                messages.push(LogMessage {
                    output: Output::Stdout,
                    timestamp: Some(timestamp),
                    body: rest,
                });
                return messages;
            }
        }
    }
}

/// Parses the `<RFC 3339 timestamp> ` prefix the engine puts on a message:
/// the timestamp in Unix nanoseconds and where the body starts.
pub fn split_timestamp(message: &[u8]) -> Option<(i64, usize)> {
    let space = message.iter().take(40).position(|b| *b == b' ')?;
    let text = std::str::from_utf8(&message[..space]).ok()?;
    Some((parse_rfc3339_nanos(text)?, space + 1))
}

/// `2006-01-02T15:04:05.999999999Z` or with a `±hh:mm` offset → Unix
/// nanoseconds. The fraction may have 0 to 9 digits.
pub fn parse_rfc3339_nanos(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = bytes.get(range)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        part.iter().try_fold(0i64, |n, d| {
            n.checked_mul(10)?.checked_add(i64::from(d - b'0'))
        })
    };
    if bytes.get(4) != Some(&b'-')
        || bytes.get(7) != Some(&b'-')
        || !matches!(bytes.get(10), Some(b'T' | b't'))
        || bytes.get(13) != Some(&b':')
        || bytes.get(16) != Some(&b':')
    {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut at = 19;
    let mut nanos = 0i64;
    if bytes.get(at) == Some(&b'.') {
        let start = at + 1;
        let end = start
            + bytes[start..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
        if end == start || end - start > 9 {
            return None;
        }
        nanos = digits(start..end)? * 10i64.pow(u32::try_from(9 - (end - start)).ok()?);
        at = end;
    }
    let offset_secs = match bytes.get(at..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), ..] if bytes.len() == at + 6 && bytes[at + 3] == b':' => {
            let offset = digits(at + 1..at + 3)? * 3600 + digits(at + 4..at + 6)? * 60;
            if *sign == b'+' { offset } else { -offset }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_to_unix_nanoseconds() {
        assert_eq!(parse_rfc3339_nanos("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_nanos("2026-11-23T00:05:56.123456789Z"),
            Some(1_795_392_356_123_456_789)
        );
        assert_eq!(
            parse_rfc3339_nanos("2026-11-23T01:05:56.1+01:00"),
            Some(1_795_392_356_100_000_000)
        );
        assert_eq!(
            parse_rfc3339_nanos("2000-02-29T12:00:00-00:30"),
            Some(951_827_400_000_000_000)
        );
        for bad in [
            "",
            "2026-11-23",
            "2026-13-01T00:00:00Z",
            "2026-11-23T00:00:00",
            "2026-11-23T00:00:00.Z",
            "2026-11-23T00:00:00.1234567890Z",
            "2026-11-23T00:00:00+0100",
            "x026-11-23T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339_nanos(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_frame_loses_its_timestamp_prefix() {
        let message = framed(
            Output::Stderr,
            Bytes::from_static(b"2026-11-23T00:05:56.000000001Z hello world\n"),
        );
        assert_eq!(message.output, Output::Stderr);
        assert_eq!(message.timestamp, Some(1_795_392_356_000_000_001));
        assert_eq!(&message.body[..], b"hello world\n");
        let untimed = framed(Output::Stdout, Bytes::from_static(b"no timestamp here\n"));
        assert_eq!(untimed.timestamp, None);
        assert_eq!(&untimed.body[..], b"no timestamp here\n");
    }

    #[test]
    fn tty_pieces_of_long_lines_are_split_at_the_engine_boundary() {
        let piece = vec![b'a'; PARTIAL_MESSAGE_BYTES];
        let mut chunk = b"2026-11-23T00:00:00.000000001Z ".to_vec();
        chunk.extend_from_slice(&piece);
        chunk.extend_from_slice(b"2026-11-23T00:00:00.000000002Z tail\r\n");
        let messages = raw(Bytes::from(chunk));
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].body.len(), PARTIAL_MESSAGE_BYTES);
        assert_eq!(messages[1].timestamp, Some(1_795_392_000_000_000_002));
        assert_eq!(&messages[1].body[..], b"tail\r\n");

        let one = raw(Bytes::from_static(b"2026-11-23T00:00:00Z line\r\n"));
        assert_eq!(one.len(), 1);
        assert_eq!(&one[0].body[..], b"line\r\n");
    }
}
