//! The holder's socket: `SOCK_SEQPACKET` Unix sockets (one datagram per
//! request or reply) carrying file descriptors as `SCM_RIGHTS`, through
//! rustix's safe socket calls (rustix is the project's syscall binding:
//! here, for inotify in `logs::jsonfile` and for `USER_HZ` in
//! `stats::cgroup`).

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
    sockopt,
};

/// Most file descriptors one message carries.
pub const MAX_FDS: usize = 4;
/// Largest message.
pub const MAX_MESSAGE: usize = 8 * 1024;

fn socket() -> io::Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

fn address(path: &Path) -> io::Result<SocketAddrUnix> {
    Ok(SocketAddrUnix::new(path)?)
}

/// Binds and listens at `path` (which must not exist).
pub fn listen(path: &Path) -> io::Result<OwnedFd> {
    let listener = socket()?;
    rustix::net::bind(&listener, &address(path)?)?;
    rustix::net::listen(&listener, 64)?;
    Ok(listener)
}

/// Connects to the socket at `path`.
pub fn connect(path: &Path) -> io::Result<OwnedFd> {
    let conn = socket()?;
    rustix::net::connect(&conn, &address(path)?)?;
    Ok(conn)
}

/// Accepts one connection.
pub fn accept(listener: impl AsFd) -> io::Result<OwnedFd> {
    Ok(rustix::net::accept_with(listener, SocketFlags::CLOEXEC)?)
}

/// Bounds how long a send or receive on `conn` may block.
pub fn set_timeouts(conn: impl AsFd, timeout: Duration) -> io::Result<()> {
    sockopt::set_socket_timeout(&conn, sockopt::Timeout::Recv, Some(timeout))?;
    sockopt::set_socket_timeout(&conn, sockopt::Timeout::Send, Some(timeout))?;
    Ok(())
}

/// The user id of the process at the other end.
pub fn peer_uid(conn: impl AsFd) -> io::Result<u32> {
    Ok(sockopt::socket_peercred(conn)?.uid.as_raw())
}

/// Our user id.
pub fn own_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// Waits up to `timeout` for `fd` to be readable (or to have a pending
/// connection); true when it is.
pub fn readable(fd: impl AsFd, timeout: Duration) -> io::Result<bool> {
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let timeout = Timespec {
        tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    match rustix::event::poll(&mut fds, Some(&timeout)) {
        Ok(n) => Ok(n > 0),
        Err(rustix::io::Errno::INTR) => Ok(false),
        Err(err) => Err(err.into()),
    }
}

/// Sends one message with `fds` attached.
pub fn send(conn: impl AsFd, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if bytes.len() > MAX_MESSAGE || fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "holder message too large",
        ));
    }
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("no room for file descriptors"));
    }
    let sent = rustix::net::sendmsg(
        conn,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    if sent != bytes.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "holder message cut short",
        ));
    }
    Ok(())
}

/// Receives one message and the descriptors that came with it; an empty
/// message means the peer closed the connection.
pub fn recv(conn: impl AsFd) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = rustix::net::recvmsg(
        conn,
        &mut [IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    // Take ownership of every descriptor first, so none leaks on an error.
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if msg.flags.contains(ReturnFlags::TRUNC) || msg.flags.contains(ReturnFlags::CTRUNC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "holder message truncated",
        ));
    }
    buf.truncate(msg.bytes);
    Ok((buf, fds))
}

/// Raises the soft open-files limit to the hard one: the holder keeps two
/// descriptors per task.
pub fn raise_fd_limit() {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    if limit.current < limit.maximum {
        let _ = rustix::process::setrlimit(
            rustix::process::Resource::Nofile,
            rustix::process::Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        );
    }
}

/// Takes an exclusive lock on `file` without blocking; false when another
/// process holds it.
pub fn try_lock(file: &std::fs::File) -> io::Result<bool> {
    match rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};

    #[test]
    fn descriptors_travel_with_messages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = listen(&path).unwrap();
        let client = connect(&path).unwrap();
        let server = accept(&listener).unwrap();
        assert_eq!(peer_uid(&server).unwrap(), own_uid());

        let (reader, writer) = std::io::pipe().unwrap();
        send(&client, b"put", &[writer.as_fd()]).unwrap();
        drop(writer);
        let (bytes, mut fds) = recv(&server).unwrap();
        assert_eq!(bytes, b"put");
        assert_eq!(fds.len(), 1);
        let mut passed = std::fs::File::from(fds.remove(0));
        passed.write_all(b"through the passed fd").unwrap();
        drop(passed);
        let mut got = String::new();
        std::fs::File::from(OwnedFd::from(reader))
            .read_to_string(&mut got)
            .unwrap();
        assert_eq!(got, "through the passed fd");

        drop(client);
        let (bytes, fds) = recv(&server).unwrap();
        assert!(bytes.is_empty() && fds.is_empty(), "end of connection");
    }

    #[test]
    fn the_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = std::fs::File::create(&path).unwrap();
        let second = std::fs::File::open(&path).unwrap();
        assert!(try_lock(&first).unwrap());
        assert!(!try_lock(&second).unwrap());
        drop(first);
        assert!(try_lock(&second).unwrap());
    }
}
