//! Choosing a TLS listener's certificate by the client's SNI: [`SniResolver`], a rustls
//! `ResolvesServerCert` over maps built once when the listener's files are loaded.
//!
//! Each certificate is filed under the DNS names of its leaf's subject alternative names:
//! exact names (`api.example.com`) and wildcards (`*.example.com`, filed under
//! `example.com`). A client's SNI (rustls hands it over lower-cased, and a trailing dot is
//! ignored) matches an exact name first, then a wildcard one label deep (`a.example.com`
//! matches `*.example.com`, `a.b.example.com` does not). No SNI, or one that matches nothing:
//! the default certificate. When two certificates share a name, the first listed wins. A
//! lookup is two hash probes and an `Arc` clone: nothing allocated per handshake.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A listener's certificates by name, and its default.
#[derive(Debug)]
pub struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Wildcard certificates by the part after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    /// A resolver answering `default` to every client until names are added.
    pub fn new(default: Arc<CertifiedKey>) -> Self {
        SniResolver {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            default,
        }
    }

    /// Files `key` under its leaf certificate's DNS names (exact and wildcard); names already
    /// taken by an earlier certificate stay with it. Returns how many names were read.
    pub fn add(&mut self, key: &Arc<CertifiedKey>) -> usize {
        let Some(leaf) = key.cert.first() else {
            return 0;
        };
        let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else {
            return 0;
        };
        let mut n = 0;
        for name in cert.valid_dns_names() {
            n += 1;
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            match name.strip_prefix("*.") {
                Some(parent) => self.wildcard.entry(parent.to_owned()),
                None => self.exact.entry(name),
            }
            .or_insert_with(|| key.clone());
        }
        n
    }

    /// The certificate for a client that sent `sni`.
    pub fn find(&self, sni: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = sni else {
            return &self.default;
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        if let Some(k) = self.exact.get(name) {
            return k;
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .unwrap_or(&self.default)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.find(hello.server_name()).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(names: &[&str]) -> Arc<CertifiedKey> {
        let ck = rcgen::generate_simple_self_signed(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .expect("certificate");
        let der =
            rustls::pki_types::PrivateKeyDer::try_from(ck.key_pair.serialize_der()).expect("key");
        let provider = rustls::crypto::ring::default_provider();
        Arc::new(CertifiedKey::from_der(vec![ck.cert.der().clone()], der, &provider).expect("fits"))
    }

    #[test]
    fn exact_then_wildcard_then_default() {
        let a = key(&["a.example", "www.a.example"]);
        let wild = key(&["*.b.example"]);
        let other = key(&["a.example", "c.example"]);
        let mut r = SniResolver::new(a.clone());
        assert_eq!(r.add(&a), 2);
        assert_eq!(r.add(&wild), 1);
        assert_eq!(r.add(&other), 2);
        assert!(
            Arc::ptr_eq(r.find(Some("a.example")), &a),
            "first listed wins"
        );
        assert!(Arc::ptr_eq(r.find(Some("c.example")), &other));
        assert!(Arc::ptr_eq(r.find(Some("c.example.")), &other));
        assert!(Arc::ptr_eq(r.find(Some("x.b.example")), &wild));
        assert!(
            Arc::ptr_eq(r.find(Some("x.y.b.example")), &a),
            "one label deep"
        );
        assert!(Arc::ptr_eq(r.find(Some("b.example")), &a));
        assert!(Arc::ptr_eq(r.find(Some("nothing.test")), &a));
        assert!(Arc::ptr_eq(r.find(None), &a));
    }
}
