//! TCP sockets of the sidecar's network namespace, from the kernel's `sock_diag` netlink interface.
//!
//! `/proc/<pid>/net/tcp` walks every bucket of the kernel's connection hash table on each read,
//! a table sized by the node's memory, not the pod's traffic. A `sock_diag` dump filtered to
//! listening sockets walks only the listeners, so discovery can re-check listening ports of
//! unselected processes cheaply; connections are dumped only when a process gets selected.

use std::io;
use std::net::SocketAddr;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    AF_INET, AF_INET6, IPPROTO_TCP, SockDiagMessage, TCP_LISTEN,
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
};
use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_SOCK_DIAG};

/// One TCP socket as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpSocket {
    pub inode: u64,
    /// The socket cookie, as `bpf_get_socket_cookie` gives it.
    pub cookie: u64,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub listening: bool,
}

/// Which sockets a dump asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum States {
    Listening,
    ListeningAndEstablished,
}

/// A netlink socket for `sock_diag` requests.
#[derive(Debug)]
pub struct SockDiag {
    socket: Socket,
    buf: Vec<u8>,
}

/// Large enough for the kernel's dump batches (it fills up to a page or so per read).
const RECV_BYTES: usize = 64 * 1024;

fn invalid(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("sock_diag: {what}"))
}

impl SockDiag {
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        socket.connect(&NetlinkAddr::new(0, 0))?;
        Ok(Self {
            socket,
            buf: vec![0; RECV_BYTES],
        })
    }

    /// TCP sockets (IPv4 and IPv6) of the namespace in the given states.
    pub fn tcp(&mut self, states: States) -> io::Result<Vec<TcpSocket>> {
        let flags = match states {
            States::Listening => StateFlags::LISTEN,
            States::ListeningAndEstablished => StateFlags::LISTEN | StateFlags::ESTABLISHED,
        };
        let mut sockets = Vec::new();
        for (family, socket_id) in [
            (AF_INET, SocketId::new_v4()),
            (AF_INET6, SocketId::new_v6()),
        ] {
            self.dump(family, socket_id, flags.clone(), &mut sockets)?;
        }
        Ok(sockets)
    }

    fn dump(
        &mut self,
        family: u8,
        socket_id: SocketId,
        states: StateFlags,
        out: &mut Vec<TcpSocket>,
    ) -> io::Result<()> {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut request = NetlinkMessage::new(
            header,
            SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::empty(),
                states,
                socket_id,
            })
            .into(),
        );
        request.finalize();
        let mut bytes = vec![0; request.buffer_len()];
        request.serialize(&mut bytes);
        self.socket.send(&bytes, 0)?;
        loop {
            let size = self.socket.recv(&mut &mut self.buf[..], 0)?;
            let mut batch = self.buf.get(..size).unwrap_or_default();
            while !batch.is_empty() {
                let message =
                    NetlinkMessage::<SockDiagMessage>::deserialize(batch).map_err(invalid)?;
                let length = message.header.length as usize;
                match message.payload {
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(error) => {
                        return Err(error.to_io());
                    }
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                        let header = &response.header;
                        let id = &header.socket_id;
                        // Two u32 halves, low first, each in host order.
                        let half = |at: usize| {
                            let mut word = [0; 4];
                            word.copy_from_slice(id.cookie.get(at..at + 4).unwrap_or(&[0; 4]));
                            u64::from(u32::from_ne_bytes(word))
                        };
                        out.push(TcpSocket {
                            inode: u64::from(header.inode),
                            cookie: half(0) | (half(4) << 32),
                            local: SocketAddr::new(id.source_address, id.source_port),
                            peer: SocketAddr::new(id.destination_address, id.destination_port),
                            listening: header.state == TCP_LISTEN,
                        });
                    }
                    _ => {}
                }
                if length == 0 || length > batch.len() {
                    return Err(invalid("message length out of bounds"));
                }
                // Messages are 4-byte aligned within a batch.
                batch = batch.get(length.next_multiple_of(4)..).unwrap_or_default();
            }
        }
    }
}

/// A socket's cookie as `SO_COOKIE` gives it (the id BPF programs see), for tests that match
/// dumps with sockets they own.
#[cfg(test)]
pub(crate) fn cookie_of(fd: i32) -> u64 {
    let mut cookie = 0u64;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into the u64 we own.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "SO_COOKIE: {}", io::Error::last_os_error());
    cookie
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    fn inode_of(fd: i32) -> u64 {
        let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        let text = link.to_string_lossy();
        text.trim_start_matches("socket:[")
            .trim_end_matches(']')
            .parse()
            .unwrap()
    }

    #[test]
    fn dumps_listeners_alone_or_with_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let listener6 = TcpListener::bind("[::1]:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut diag = SockDiag::open().unwrap();

        let listening = diag.tcp(States::Listening).unwrap();
        let find = |sockets: &[TcpSocket], fd: i32| {
            let inode = inode_of(fd);
            sockets.iter().find(|s| s.inode == inode).cloned()
        };
        let found = find(&listening, listener.as_raw_fd()).expect("the IPv4 listener");
        assert!(found.listening);
        assert_eq!(found.local, listener.local_addr().unwrap());
        let found6 = find(&listening, listener6.as_raw_fd()).expect("the IPv6 listener");
        assert_eq!(found6.local, listener6.local_addr().unwrap());
        assert!(listening.iter().all(|s| s.listening));
        assert_eq!(find(&listening, server.as_raw_fd()), None);

        let all = diag.tcp(States::ListeningAndEstablished).unwrap();
        let accepted = find(&all, server.as_raw_fd()).expect("the accepted connection");
        assert!(!accepted.listening);
        assert_eq!(accepted.cookie, cookie_of(server.as_raw_fd()));
        assert_eq!(accepted.local, server.local_addr().unwrap());
        assert_eq!(accepted.peer, client.local_addr().unwrap());
        assert!(find(&all, listener.as_raw_fd()).is_some());
    }
}
