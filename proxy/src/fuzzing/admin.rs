//! A JSON body to one of the admin API's write endpoints, over in-memory IO: the fuzzer's
//! first byte picks the endpoint, the rest is the body, sent as an HTTP/1 request with a
//! right `Host`, `Content-Type` and `Content-Length` through the admin router. The runtime
//! and config are the process's ([`super::world`]); the limiter the endpoint changes (mode,
//! model, thresholds, overrides, block list) is fresh for every input.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zgate_config::Config;
use zgate_limiter::{Limiter, LimiterConfig, Nanos};

use super::world::{self, World};
use crate::admin::guard::Site;
use crate::admin::{router, Control};
use crate::clock::Clock;
use crate::state::overrides::Overrides;
use crate::state::persist::{Persist, Runtime as Saved};
use crate::state::reload::{ReloadError, ReloadReport};

/// The write endpoints with a JSON body, by method and path.
const ENDPOINTS: [(&str, &str); 5] = [
    ("PUT", "/api/v1/mode"),
    ("PUT", "/api/v1/model"),
    ("PUT", "/api/v1/thresholds"),
    ("POST", "/api/v1/blocks"),
    ("PUT", "/api/v1/overrides"),
];

/// The admin API's address as its checks see it.
const ADMIN: &str = "127.0.0.1:7391";

/// Bytes the in-memory connection buffers each way: any answer fits.
const PIPE: usize = 128 * 1024;

struct AdminWorld {
    world: World,
    site: Site,
}

/// Sends `data[1..]` as the JSON body of the endpoint `data[0]` picks (see the module docs).
pub fn admin_json(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let Some(w) = admin_world() else { return };
    let Some(core) = FuzzCore::new(&w.world) else {
        return;
    };
    let core = Arc::new(core);
    let (method, path) = ENDPOINTS[usize::from(pick) % ENDPOINTS.len()];
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {ADMIN}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    w.world.runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(PIPE);
        let site = w.site.clone();
        let peer = w.site.addr;
        let service = service_fn(move |req| {
            let core = core.clone();
            let site = site.clone();
            async move { Ok::<_, Infallible>(router::handle(&*core, &site, peer, req).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(server), service);
        let served = tokio::spawn(conn);
        let _ = client.write_all(&request).await;
        let mut sink = Vec::new();
        let _ = client.read_to_end(&mut sink).await;
        let _ = served.await;
    });
}

fn admin_world() -> Option<&'static AdminWorld> {
    static WORLD: OnceLock<Option<AdminWorld>> = OnceLock::new();
    WORLD.get_or_init(build).as_ref()
}

fn build() -> Option<AdminWorld> {
    let text = "[[listener]]\naddr = \"127.0.0.1:0\"\n[[backend]]\naddr = \"127.0.0.1:1\"\n";
    let world = World::new(world::runtime()?, text)?;
    let site = Site {
        addr: ADMIN.parse().ok()?,
        token: None,
        public_healthz: false,
    };
    Some(AdminWorld { world, site })
}

/// What the admin endpoints operate on, without a server: a limiter, its config and
/// overrides; no state file, no config file to reload.
struct FuzzCore {
    limiter: Limiter,
    clock: Clock,
    config: Arc<Config>,
    file_limiter_config: Arc<LimiterConfig>,
    limiter_config: Mutex<Arc<LimiterConfig>>,
    overrides: Mutex<Overrides>,
    persist: Persist,
}

impl FuzzCore {
    /// A fresh limiter on the world's config, no overrides, nothing saved.
    fn new(w: &World) -> Option<FuzzCore> {
        let limiter = w.limiter()?;
        let persist = Persist::new(None, &limiter, None, Saved::default());
        Some(FuzzCore {
            limiter,
            clock: w.clock,
            config: w.config.clone(),
            file_limiter_config: w.limiter_config.clone(),
            limiter_config: Mutex::new(w.limiter_config.clone()),
            overrides: Mutex::new(Overrides::default()),
            persist,
        })
    }
}

impl Control for FuzzCore {
    fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    fn now(&self) -> Nanos {
        self.clock.now()
    }

    fn config(&self) -> Arc<Config> {
        self.config.clone()
    }

    fn limiter_config(&self) -> Arc<LimiterConfig> {
        let c = self.limiter_config.lock();
        c.unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn persist(&self) -> &Persist {
        &self.persist
    }

    fn file_limiter_config(&self) -> Arc<LimiterConfig> {
        self.file_limiter_config.clone()
    }

    fn overrides(&self) -> Overrides {
        let o = self.overrides.lock();
        o.unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn set_overrides(&self, new: Overrides) -> Result<(), zgate_limiter::LimiterConfigError> {
        let effective = new.apply(&self.file_limiter_config);
        self.limiter.reconfigure(&effective)?;
        *self
            .limiter_config
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(effective);
        *self
            .overrides
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = new;
        Ok(())
    }

    fn blocks_changed(&self) {}

    fn metrics(&self) -> String {
        String::new()
    }

    fn reload(&self) -> Result<ReloadReport, ReloadError> {
        Err(ReloadError::NoConfigFile)
    }

    fn fleet(&self) -> Option<crate::admin::FleetView> {
        None
    }
}
