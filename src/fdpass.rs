//! Bytes with file descriptors attached (SCM_RIGHTS), over Unix sockets:
//! the listening sockets a takeover hands over, and the session sockets
//! system-wide mode's helper passes back. rustix's `sendmsg` is a safe
//! wrapper; descriptors received come as `OwnedFd`s.

use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::BorrowedFd;

use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

/// Sends `bytes` with `fds` attached; returns how many bytes went (on a
/// stream socket the descriptors ride on the first of them; a
/// `SOCK_SEQPACKET` message goes whole or not at all). `extra`: more
/// flags (`SendFlags::DONTWAIT`) beside `NOSIGNAL`.
pub fn send_with_fds(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
    extra: SendFlags,
) -> std::io::Result<usize> {
    let mut space = vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !cmsg.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(std::io::Error::other(
            "too many descriptors for one message",
        ));
    }
    Ok(rustix::net::sendmsg(
        socket,
        &[IoSlice::new(bytes)],
        &mut cmsg,
        SendFlags::NOSIGNAL | extra,
    )?)
}
