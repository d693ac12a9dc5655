//! The bound listeners, identified by their config address so that a reload keeps the ones it
//! still names (with their TLS re-read), closes the others and adds new ones.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwapOption;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::accept::{accept_loop, Admission};

/// The server's listeners; `None` inside once shut down.
pub(crate) struct Listeners {
    bound: Mutex<Option<Vec<Bound>>>,
    /// The runtime the accept loops run on (the accept thread's).
    accept_rt: tokio::runtime::Handle,
    admission: Arc<Admission>,
}

/// A listener bound and ready to accept, not yet running.
pub(crate) struct NewListener {
    /// The address as written in the config (port 0 stays 0): the identity across reloads.
    pub(crate) config_addr: SocketAddr,
    /// The bound socket.
    pub(crate) listener: TcpListener,
    /// The address actually bound.
    pub(crate) local: SocketAddr,
    /// TLS, if the listener has it.
    pub(crate) tls: Option<TlsAcceptor>,
    /// `listener[].proxy_protocol`.
    pub(crate) proxy_protocol: bool,
}

/// What a reload sets on a listener it keeps.
pub(crate) struct Kept {
    /// The listener, by config address.
    pub(crate) config_addr: SocketAddr,
    /// Its TLS, re-read.
    pub(crate) tls: Option<TlsAcceptor>,
    /// `listener[].proxy_protocol`: new connections follow the new value.
    pub(crate) proxy_protocol: bool,
}

/// One running listener.
struct Bound {
    config_addr: SocketAddr,
    local: SocketAddr,
    /// TLS, swappable by a reload (certificate rotation).
    tls: Arc<ArcSwapOption<TlsAcceptor>>,
    /// Whether connections open with a PROXY protocol header, changeable by a reload.
    proxy_protocol: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

/// What [`Listeners::apply`] changed: bound addresses added and removed.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    pub(crate) added: Vec<SocketAddr>,
    pub(crate) removed: Vec<SocketAddr>,
}

/// The listeners were stopped (shutdown): nothing can be applied any more.
#[derive(Debug)]
pub(crate) struct Stopped;

impl Listeners {
    /// No listeners yet; accept loops will run on `accept_rt` and admit through `admission`.
    pub(crate) fn new(accept_rt: tokio::runtime::Handle, admission: Arc<Admission>) -> Self {
        Listeners {
            bound: Mutex::new(Some(Vec::new())),
            accept_rt,
            admission,
        }
    }

    /// Starts accepting on `new`.
    pub(crate) fn add(&self, new: NewListener) -> Result<(), Stopped> {
        let mut guard = self.lock();
        let list = guard.as_mut().ok_or(Stopped)?;
        tracing::info!(
            addr = %new.local,
            tls = new.tls.is_some(),
            proxy_protocol = new.proxy_protocol,
            "listening"
        );
        list.push(self.spawn(new));
        Ok(())
    }

    /// Makes the set of listeners the config's (`order`, by config address): closes those
    /// not in it (their connections finish on their own), re-reads the TLS and PROXY protocol
    /// setting of those kept (`kept`, by config address) and starts `new`.
    pub(crate) fn apply(
        &self,
        order: &[SocketAddr],
        kept: Vec<Kept>,
        new: Vec<NewListener>,
    ) -> Result<Changes, Stopped> {
        let mut guard = self.lock();
        let list = guard.as_mut().ok_or(Stopped)?;
        let mut changes = Changes::default();
        list.retain(|b| {
            let keep = order.contains(&b.config_addr);
            if !keep {
                // Closing the socket stops accepting; its connections run on their own tasks.
                b.task.abort();
                changes.removed.push(b.local);
                tracing::info!(addr = %b.local, "listener closed by reload");
            }
            keep
        });
        for b in list.iter() {
            if let Some(k) = kept.iter().find(|k| k.config_addr == b.config_addr) {
                b.tls.store(k.tls.clone().map(Arc::new));
                b.proxy_protocol.store(k.proxy_protocol, Ordering::Relaxed);
            }
        }
        for n in new {
            tracing::info!(
                addr = %n.local,
                tls = n.tls.is_some(),
                proxy_protocol = n.proxy_protocol,
                "listening"
            );
            changes.added.push(n.local);
            list.push(self.spawn(n));
        }
        // Keep the config's listener order.
        list.sort_by_key(|b| order.iter().position(|a| *a == b.config_addr));
        Ok(changes)
    }

    /// The bound addresses, in the config's order (port 0 resolved).
    pub(crate) fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs(|b| b.local)
    }

    /// The config addresses of the listeners bound now.
    pub(crate) fn config_addrs(&self) -> Vec<SocketAddr> {
        self.addrs(|b| b.config_addr)
    }

    /// Stops accepting on every listener, for good.
    pub(crate) fn stop(&self) {
        if let Some(list) = self.lock().take() {
            for b in list {
                b.task.abort();
            }
        }
    }

    fn addrs(&self, f: impl Fn(&Bound) -> SocketAddr) -> Vec<SocketAddr> {
        self.lock()
            .as_ref()
            .map(|list| list.iter().map(f).collect())
            .unwrap_or_default()
    }

    fn spawn(&self, new: NewListener) -> Bound {
        let NewListener {
            config_addr,
            listener,
            local,
            tls,
            proxy_protocol,
        } = new;
        let tls = Arc::new(ArcSwapOption::from(tls.map(Arc::new)));
        let proxy_protocol = Arc::new(AtomicBool::new(proxy_protocol));
        let loop_proxy = proxy_protocol.clone();
        // The listener was registered with the binding runtime's reactor: hand it to the
        // accept thread's (epoll registration follows the runtime that polls it).
        let admission = self.admission.clone();
        let loop_tls = tls.clone();
        let task = self.accept_rt.spawn(async move {
            let listener = listener.into_std().and_then(TcpListener::from_std);
            match listener {
                Ok(l) => accept_loop(l, loop_tls, loop_proxy, admission).await,
                Err(e) => {
                    tracing::error!(addr = %local, error = %e, "cannot accept on the listener")
                }
            }
        });
        Bound {
            config_addr,
            local,
            tls,
            proxy_protocol,
            task,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Vec<Bound>>> {
        // The list is consistent after every statement: a poisoned lock is usable.
        self.bound.lock().unwrap_or_else(|p| p.into_inner())
    }
}
