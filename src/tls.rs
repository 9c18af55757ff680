//! TLS for every HTTPS client bootlace makes (object stores, IMDS, health URLs): rustls
//! with ring as its crypto provider, installed once per process before any client is
//! built. (ring rather than the default aws-lc-rs: the same TLS, without compiling a
//! large C library into every build.)

use std::sync::Once;

/// Installs ring as the process's rustls provider, once; later calls do nothing.
pub fn init() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        // Another provider already installed (by an embedding program) is kept.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
