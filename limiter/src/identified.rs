//! How a client's address was obtained, for the admin API's view of a client.

use core::fmt;

/// Where the address that names a client came from (DESIGN.md §6a). A client seen through
/// several ways shows the latest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Identified {
    /// The socket's peer address.
    #[default]
    Peer,
    /// The PROXY protocol header of a listener that requires one.
    ProxyProtocol,
    /// The forwarding header of a request from a trusted proxy.
    Header,
}

impl Identified {
    /// `"peer"`, `"proxy_protocol"` or `"header"`.
    pub fn name(self) -> &'static str {
        match self {
            Identified::Peer => "peer",
            Identified::ProxyProtocol => "proxy_protocol",
            Identified::Header => "header",
        }
    }

    pub(crate) fn to_bits(self) -> u64 {
        match self {
            Identified::Peer => 0,
            Identified::ProxyProtocol => 1,
            Identified::Header => 2,
        }
    }

    pub(crate) fn from_bits(bits: u64) -> Identified {
        match bits {
            1 => Identified::ProxyProtocol,
            2 => Identified::Header,
            _ => Identified::Peer,
        }
    }
}

impl fmt::Display for Identified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
