//! [`Router`]: every pool of a config, the route table, and the default pool; what the service
//! holds (behind one `ArcSwap`, swapped whole by a reload) to find a request's pool.

use std::sync::Arc;

use zgate_config::Config;

use super::routes::RouteTable;
use super::{BackendsError, Outgoing, Upstream};

/// The pools and the routes to them.
#[derive(Debug)]
pub struct Router<B> {
    /// The default pool first (when there is one), then the `[[pool]]`s in file order.
    pools: Box<[Arc<Upstream<B>>]>,
    /// Index in `pools` of the default pool (the `[[backend]]` list).
    default: Option<usize>,
    table: RouteTable,
}

impl<B: Outgoing> Router<B> {
    /// Builds every pool of `config` (no connection made yet) and its route table.
    pub fn new(config: &Config) -> Result<Self, BackendsError> {
        let specs = config
            .default_pool()
            .into_iter()
            .chain(config.pools.iter().cloned());
        let pools = specs
            .map(|spec| Upstream::new(&spec, config).map(Arc::new))
            .collect::<Result<Box<[_]>, _>>()?;
        let index = |name: &str| pools.iter().position(|p| p.name() == name);
        let default = index(zgate_config::DEFAULT_POOL);
        let mut routes = Vec::with_capacity(config.routes.len());
        for (i, r) in config.routes.iter().enumerate() {
            // The config checked that every route names a pool; keep the error typed anyway.
            let pool = index(&r.pool).ok_or_else(|| BackendsError::UnknownPool {
                route: i,
                pool: r.pool.clone(),
            })?;
            routes.push((&r.host, r.path_prefix.as_str(), pool));
        }
        Ok(Router {
            table: RouteTable::new(routes),
            pools,
            default,
        })
    }

    /// The pool of a request to `authority` (the `Host` or `:authority`, empty when none) for
    /// `path`: its route's, else the default pool; `None` (404) when neither.
    #[inline]
    pub fn route(&self, authority: &[u8], path: &str) -> Option<&Arc<Upstream<B>>> {
        let i = if self.table.is_empty() {
            self.default
        } else {
            self.table.lookup(authority, path).or(self.default)
        };
        self.pools.get(i?)
    }

    /// Starts every pool's active health checks (those that have `health`), on the current
    /// tokio runtime.
    pub fn start_checks(&self) {
        for p in self.pools.iter() {
            p.start_checks();
        }
    }

    /// These pools were replaced (a reload) or the server stops: their health checks stop.
    pub fn retire(&self) {
        for p in self.pools.iter() {
            p.retire();
        }
    }

    /// Every pool: the default first, then the `[[pool]]`s in file order.
    pub fn pools(&self) -> impl Iterator<Item = &Upstream<B>> {
        self.pools.iter().map(|p| &**p)
    }

    /// How many backends all pools have together.
    pub fn backend_count(&self) -> usize {
        self.pools.iter().map(|p| p.backends().count()).sum()
    }

    /// Takes over, for every backend of a pool with the same name and address in `old`, its
    /// counters and requests in flight, so a reload does not reset them. Call before the
    /// router is shared.
    pub fn carry_stats_from(&mut self, old: &Router<B>) {
        for pool in self.pools.iter_mut() {
            let Some(pool) = Arc::get_mut(pool) else {
                // Shared already: nothing to carry into safely (not reached: called once built).
                continue;
            };
            if let Some(o) = old.pools.iter().find(|o| o.name() == pool.name()) {
                pool.carry_stats_from(o);
            }
        }
    }
}
