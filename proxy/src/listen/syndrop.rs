//! Dropping a blocked client's SYNs in the kernel once it keeps reconnecting
//! (`limits.syn_drop_after`).
//!
//! A blocked client is refused at accept with a TCP RST. One that reconnects at full speed then
//! costs the proxy's CPUs a handshake, an accept, a setsockopt and a reset per attempt, for as
//! long as it keeps going. After `syn_drop_after` such refusals, its address goes into a
//! classic BPF socket filter on the listener, which the kernel runs on every packet for the
//! listener before any TCP processing: its SYNs are dropped, nothing is answered, and its
//! connects time out instead. Each accept loop keeps its own listener's filter; once a second it
//! takes out the addresses that are no longer blocked (block expired, or `zgate ctl unblock`).
//!
//! The filter matches exact addresses (IPv4, or IPv6 in full, whatever `limits.ipv6_prefix`
//! groups): a client is put in it for what it does itself. Accepted sockets inherit a
//! listener's filter, so while one is set, admitted connections have theirs removed.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};

/// Addresses in one listener's filter at most (9 instructions each for IPv6: within the
/// kernel's 4096); beyond that, blocked clients are still refused at accept.
pub const MAX_DROPPED: usize = 256;

/// Blocked clients whose refusals are being counted at most, per listener.
const MAX_COUNTED: usize = 4096;

/// One listener's filter and the refusals counted towards it.
#[derive(Debug, Default)]
pub struct SynDrop {
    /// Refusals at accept per blocked client not yet in the filter.
    refused: HashMap<IpAddr, u32>,
    /// The addresses in the filter.
    dropped: Vec<IpAddr>,
}

impl SynDrop {
    /// Whether the listener has a filter set (admitted sockets must then drop their copy).
    pub fn is_active(&self) -> bool {
        !self.dropped.is_empty()
    }

    /// Whether nothing is counted or filtered (nothing to prune).
    pub fn is_empty(&self) -> bool {
        self.refused.is_empty() && self.dropped.is_empty()
    }

    /// The addresses in the filter.
    pub fn dropped(&self) -> &[IpAddr] {
        &self.dropped
    }

    /// A blocked client was refused at accept. Returns whether this put it in the filter.
    pub fn refused(&mut self, listener: &impl AsFd, ip: IpAddr, after: u32) -> io::Result<bool> {
        if after == 0 || self.dropped.len() >= MAX_DROPPED {
            return Ok(false);
        }
        let ip = ip.to_canonical();
        if !self.refused.contains_key(&ip) && self.refused.len() >= MAX_COUNTED {
            return Ok(false);
        }
        let n = self.refused.entry(ip).or_insert(0);
        *n += 1;
        if *n < after {
            return Ok(false);
        }
        self.refused.remove(&ip);
        if !self.dropped.contains(&ip) {
            self.dropped.push(ip);
            attach(listener, &self.dropped)?;
        }
        Ok(true)
    }

    /// Forgets every address `blocked` no longer holds blocked, and updates the filter.
    pub fn prune(
        &mut self,
        listener: &impl AsFd,
        blocked: impl Fn(IpAddr) -> bool,
    ) -> io::Result<()> {
        self.refused.retain(|ip, _| blocked(*ip));
        let before = self.dropped.len();
        self.dropped.retain(|ip| blocked(*ip));
        if self.dropped.len() == before {
            return Ok(());
        }
        if self.dropped.is_empty() {
            detach(listener)
        } else {
            attach(listener, &self.dropped)
        }
    }
}

/// Removes an accepted socket's copy of its listener's filter.
pub fn detach(sock: &impl AsFd) -> io::Result<()> {
    // The kernel ignores the value but wants an int's worth of it.
    let unused: libc::c_int = 0;
    // SAFETY: a plain int, no pointers in it.
    match unsafe { set_socket_option(sock, libc::SO_DETACH_FILTER, &unused) } {
        // No filter: nothing to remove.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => r,
    }
}

fn attach(listener: &impl AsFd, dropped: &[IpAddr]) -> io::Result<()> {
    let mut prog = program(dropped);
    let fprog = libc::sock_fprog {
        len: u16::try_from(prog.len()).map_err(|_| io::Error::other("filter too long"))?,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: `fprog` points to `prog.len()` instructions that outlive the call, which copies
    // them into the kernel.
    unsafe { set_socket_option(listener, libc::SO_ATTACH_FILTER, &fprog) }
}

/// `setsockopt(SOL_SOCKET, name, value)` on `sock`.
///
/// # Safety
/// Any pointer inside `value` must be valid for what the kernel reads through it for `name`.
unsafe fn set_socket_option<T>(sock: &impl AsFd, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: the fd is open (borrowed from `sock`); `value` is a live `T` of the size passed;
    // the caller vouches for the pointers inside it.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            std::ptr::from_ref(value).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

// Classic BPF opcodes (linux/filter.h, a stable ABI): class | size | mode, or class | op | src.
const LD_W_ABS: u16 = 0x20; // BPF_LD (0) | BPF_W (0) | BPF_ABS (0x20)
const LD_B_ABS: u16 = 0x30; // BPF_LD (0) | BPF_B (0x10) | BPF_ABS (0x20)
const ALU_RSH_K: u16 = 0x74; // BPF_ALU (4) | BPF_RSH (0x70) | BPF_K (0)
const JEQ_K: u16 = 0x15; // BPF_JMP (5) | BPF_JEQ (0x10) | BPF_K (0)
const JA: u16 = 0x05; // BPF_JMP (5) | BPF_JA (0): jump by k (32 bits; conditional jumps have 8)
const RET_K: u16 = 0x06; // BPF_RET (6) | BPF_K (0)
/// Loads relative to the network (IP) header, which a socket filter can reach this way
/// (`SKF_NET_OFF`).
const NET: u32 = (-0x100000i32) as u32;
/// Keep the whole packet / drop it.
const ACCEPT: u32 = u32::MAX;
const DROP: u32 = 0;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// A filter dropping every packet whose IP source is one of `dropped`. Each address is
/// tested by a run of instructions ending with its own `ret DROP`, so every conditional jump
/// is short; the one long jump (over the IPv4 block) is a `ja`.
fn program(dropped: &[IpAddr]) -> Vec<libc::sock_filter> {
    let v4: Vec<u32> = dropped
        .iter()
        .filter_map(|ip| match ip {
            IpAddr::V4(a) => Some(u32::from(*a)),
            IpAddr::V6(_) => None,
        })
        .collect();
    let v6: Vec<[u32; 4]> = dropped
        .iter()
        .filter_map(|ip| match ip {
            IpAddr::V6(a) => {
                let o = a.octets();
                Some(std::array::from_fn(|i| {
                    u32::from_be_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
                }))
            }
            IpAddr::V4(_) => None,
        })
        .collect();
    let v4_len = 2 + 2 * v4.len(); // ld src; (jeq; ret DROP)*; ret ACCEPT
    let mut p = vec![
        // The IP version: the high nibble of the first byte.
        insn(LD_B_ABS, 0, 0, NET),
        insn(ALU_RSH_K, 0, 0, 4),
        // IPv4: into the IPv4 block; otherwise over it.
        insn(JEQ_K, 1, 0, 4),
        insn(JA, 0, 0, v4_len as u32),
    ];
    // IPv4: the source address is at offset 12.
    p.push(insn(LD_W_ABS, 0, 0, NET + 12));
    for a in &v4 {
        p.push(insn(JEQ_K, 0, 1, *a));
        p.push(insn(RET_K, 0, 0, DROP));
    }
    p.push(insn(RET_K, 0, 0, ACCEPT));
    // IPv6 (the accumulator still holds the version): the source address is at offset 8.
    p.push(insn(JEQ_K, 1, 0, 6));
    p.push(insn(RET_K, 0, 0, ACCEPT));
    for w in &v6 {
        p.push(insn(LD_W_ABS, 0, 0, NET + 8));
        // A mismatch jumps past this address's `ret DROP`.
        p.push(insn(JEQ_K, 0, 7, w[0]));
        p.push(insn(LD_W_ABS, 0, 0, NET + 12));
        p.push(insn(JEQ_K, 0, 5, w[1]));
        p.push(insn(LD_W_ABS, 0, 0, NET + 16));
        p.push(insn(JEQ_K, 0, 3, w[2]));
        p.push(insn(LD_W_ABS, 0, 0, NET + 20));
        p.push(insn(JEQ_K, 0, 1, w[3]));
        p.push(insn(RET_K, 0, 0, DROP));
    }
    p.push(insn(RET_K, 0, 0, ACCEPT));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the subset of classic BPF that `program` emits on an IP packet.
    fn run(p: &[libc::sock_filter], packet: &[u8]) -> u32 {
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let i = p[pc];
            let off = i.k.wrapping_sub(NET) as usize;
            pc += 1;
            match i.code {
                LD_B_ABS => a = u32::from(packet[off]),
                LD_W_ABS => {
                    a = u32::from_be_bytes([
                        packet[off],
                        packet[off + 1],
                        packet[off + 2],
                        packet[off + 3],
                    ])
                }
                ALU_RSH_K => a >>= i.k,
                JEQ_K => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                JA => pc += i.k as usize,
                RET_K => return i.k,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    fn v4_packet(src: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0u8; 20];
        p[0] = 0x45;
        p[12..16].copy_from_slice(&src);
        p
    }

    fn v6_packet(src: std::net::Ipv6Addr) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x60;
        p[8..24].copy_from_slice(&src.octets());
        p
    }

    #[test]
    fn drops_exactly_the_listed_sources_of_both_families() {
        let a: IpAddr = "127.0.9.4".parse().unwrap();
        let b: IpAddr = "10.1.2.3".parse().unwrap();
        let c: IpAddr = "2001:db8::1".parse().unwrap();
        let p = program(&[a, c, b]);
        assert_eq!(run(&p, &v4_packet([127, 0, 9, 4])), DROP);
        assert_eq!(run(&p, &v4_packet([10, 1, 2, 3])), DROP);
        assert_eq!(run(&p, &v4_packet([127, 0, 9, 5])), ACCEPT);
        assert_eq!(run(&p, &v6_packet("2001:db8::1".parse().unwrap())), DROP);
        // Same /64, another address; and an address differing in the first word only.
        assert_eq!(run(&p, &v6_packet("2001:db8::2".parse().unwrap())), ACCEPT);
        assert_eq!(run(&p, &v6_packet("2001:db9::1".parse().unwrap())), ACCEPT);
        // Nothing listed: everything passes.
        let empty = program(&[]);
        assert_eq!(run(&empty, &v4_packet([127, 0, 9, 4])), ACCEPT);
        assert_eq!(
            run(&empty, &v6_packet("2001:db8::1".parse().unwrap())),
            ACCEPT
        );
        // Neither IPv4 nor IPv6.
        assert_eq!(run(&p, &[0x50; 40]), ACCEPT);
    }

    #[test]
    fn the_largest_filter_fits_the_kernel_and_its_jumps() {
        let many: Vec<IpAddr> = (0..MAX_DROPPED as u32)
            .map(|i| {
                if i % 2 == 0 {
                    IpAddr::V4(i.into())
                } else {
                    IpAddr::V6(u128::from(i).into())
                }
            })
            .collect();
        let p = program(&many);
        assert!(p.len() <= 4096, "{} instructions", p.len());
        // Every listed address, and one that is not, in both families.
        for ip in &many {
            let packet = match ip {
                IpAddr::V4(a) => v4_packet(a.octets()),
                IpAddr::V6(a) => v6_packet(*a),
            };
            assert_eq!(run(&p, &packet), DROP, "{ip}");
        }
        assert_eq!(run(&p, &v4_packet([1, 1, 1, 1])), ACCEPT);
        assert_eq!(run(&p, &v6_packet(u128::MAX.into())), ACCEPT);
    }
}
