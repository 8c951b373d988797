//! Dialling: resolve, optionally bind a local address, connect, all within
//! the connect timeout.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream, lookup_host};

use crate::Error;

/// Where and how to connect; kept so the connection can be redialled.
#[derive(Debug, Clone)]
pub(crate) struct Dialer {
    pub(crate) addr: String,
    pub(crate) local_addr: Option<SocketAddr>,
    pub(crate) timeout: Duration,
}

impl Dialer {
    pub(crate) fn new(
        addr: &impl fmt::Display,
        local_addr: Option<SocketAddr>,
        timeout: Duration,
    ) -> Self {
        Dialer {
            addr: addr.to_string(),
            local_addr,
            timeout,
        }
    }

    /// Connects to the first address that accepts. Fails with
    /// [`Error::ConnectTimeout`] or [`Error::Connect`], naming the address.
    pub(crate) async fn dial(&self) -> Result<TcpStream, Error> {
        match tokio::time::timeout(self.timeout, self.try_each()).await {
            Ok(result) => result.map_err(|source| Error::connect(&self.addr, source)),
            Err(_) => Err(Error::ConnectTimeout {
                addr: self.addr.clone(),
                timeout: self.timeout,
            }),
        }
    }

    async fn try_each(&self) -> io::Result<TcpStream> {
        let mut last = io::Error::new(
            io::ErrorKind::InvalidInput,
            "the address resolved to nothing",
        );
        for addr in lookup_host(&self.addr).await? {
            match self.connect(addr).await {
                Ok(stream) => return Ok(stream),
                Err(error) => last = error,
            }
        }
        Err(last)
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(local) = self.local_addr {
            socket.bind(local)?;
        }
        let stream = socket.connect(addr).await?;
        // Frames are batched per flush already; never wait for Nagle.
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}
