//! Handing an open descriptor to another process over a unix stream socket (`SCM_RIGHTS`),
//! with a short message: one `sendmsg` carries the message's length, the message and the
//! descriptor; the receiver gets the descriptor with the first byte it reads, then reads the
//! rest of the message.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

/// The largest message (a few hundred bytes of JSON in practice).
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Send `message` and `fd` over `sock` (a connected unix stream socket, blocking or not: a
/// would-block is returned as such).
pub fn send(sock: &impl AsFd, message: &[u8], fd: &impl AsFd) -> std::io::Result<()> {
    if message.len() > MAX_MESSAGE {
        return Err(std::io::Error::other(
            "message too long to pass with a descriptor",
        ));
    }
    let len = (message.len() as u32).to_be_bytes();
    let iov = [IoSlice::new(&len), IoSlice::new(message)];
    let fds = [fd.as_fd().as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let raw = sock.as_fd().as_raw_fd();
    let sent = sendmsg::<()>(raw, &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None)?;
    // The descriptor went with the first byte; the rest follows plainly.
    let whole = [&len[..], message].concat();
    let mut rest = &whole[sent..];
    while !rest.is_empty() {
        match nix::unistd::write(sock.as_fd(), rest) {
            Ok(n) => rest = &rest[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// What one `recvmsg` brought: bytes and, with the first of a message, its descriptor.
pub struct Received {
    pub bytes: Vec<u8>,
    pub fd: Option<OwnedFd>,
}

/// One `recvmsg` on `sock` (up to `max` bytes); an empty `bytes` is the end of the stream.
/// Any descriptor that came is owned by the result (close-on-exec).
pub fn recv(sock: RawFd, max: usize) -> std::io::Result<Received> {
    let mut buf = vec![0u8; max];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let (n, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
        let mut fds: Vec<RawFd> = Vec::new();
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(got) = c {
                fds.extend(got);
            }
        }
        (msg.bytes, fds)
    };
    buf.truncate(n);
    // SAFETY: the kernel just installed these descriptors in this process for us; nothing else
    // owns them.
    #[allow(unsafe_code)]
    let mut owned: Vec<OwnedFd> = fds
        .into_iter()
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    // One descriptor is expected; any more are closed here.
    let fd = if owned.is_empty() {
        None
    } else {
        Some(owned.remove(0))
    };
    Ok(Received { bytes: buf, fd })
}

/// Read one message sent by [`send`] from a blocking `sock`: the message and its descriptor.
pub fn recv_message(sock: &impl AsRawFd) -> std::io::Result<(Vec<u8>, Option<OwnedFd>)> {
    let fd = sock.as_raw_fd();
    let mut data: Vec<u8> = Vec::new();
    let mut passed = None;
    loop {
        if data.len() >= 4 {
            let len = u32::from_be_bytes(data[..4].try_into().expect("4 bytes")) as usize;
            if len > MAX_MESSAGE {
                return Err(std::io::Error::other("message too long"));
            }
            if data.len() >= 4 + len {
                data.truncate(4 + len);
                return Ok((data.split_off(4), passed));
            }
        }
        let r = match recv(fd, MAX_MESSAGE + 4 - data.len()) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r?,
        };
        if r.bytes.is_empty() {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if passed.is_none() {
            passed = r.fd;
        }
        data.extend_from_slice(&r.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_descriptor_and_its_message_arrive_together() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut mine, theirs) = UnixStream::pair().unwrap();
        send(&a, b"{\"vm\":\"web\"}", &theirs).unwrap();
        drop(theirs);
        let (msg, fd) = recv_message(&b).unwrap();
        assert_eq!(msg, b"{\"vm\":\"web\"}");
        // The passed descriptor is the other end of `mine`: what is written there arrives.
        let mut got = UnixStream::from(fd.expect("a descriptor came"));
        mine.write_all(b"frame").unwrap();
        let mut buf = [0u8; 5];
        got.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"frame");
    }

    #[test]
    fn the_end_of_the_stream_is_an_error_not_a_message() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(a);
        let e = recv_message(&b).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
