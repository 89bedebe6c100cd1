//! TLS for stream connections: TURN over TLS (`turns:`), HTTPS and WSS, with
//! rustls (no OpenSSL).
//!
//! rustls is sans-IO too: a [`TlsConn`] takes the bytes a shell read from
//! the socket and gives back the plaintext, and takes plaintext and gives
//! back the records to write. The [`Driver`](crate::driver::Driver) puts one
//! in front of each connection accepted on a TLS listener; the shells still
//! only move bytes.
//!
//! [`Certs`] is the certificate every worker presents, from PEM files
//! (`--cert`, `--pkey`, coturn's names) or made at start (`--self-signed`).
//! It is replaced whole on reload (SIGHUP): connections opened afterwards get
//! the new certificate, those already open keep the session they have.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;

/// Where the certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// PEM files: the certificate chain and its private key.
    Files {
        /// `--cert`.
        cert: PathBuf,
        /// `--pkey`.
        key: PathBuf,
    },
    /// A self-signed certificate made at start for these host names or addresses.
    SelfSigned(Vec<String>),
}

/// The certificate the TLS listeners present; cloning shares it.
#[derive(Clone)]
pub struct Certs {
    current: Arc<RwLock<Loaded>>,
    source: CertSource,
}

#[derive(Clone)]
struct Loaded {
    config: Arc<ServerConfig>,
    fingerprint: String,
}

impl std::fmt::Debug for Certs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certs").field("source", &self.source).finish_non_exhaustive()
    }
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl Certs {
    /// Loads (or makes) the certificate.
    pub fn load(source: CertSource) -> io::Result<Certs> {
        let loaded = Self::make(&source)?;
        Ok(Certs { current: Arc::new(RwLock::new(loaded)), source })
    }

    fn make(source: &CertSource) -> io::Result<Loaded> {
        let (chain, key) = match source {
            CertSource::Files { cert, key } => read_pem(cert, key)?,
            CertSource::SelfSigned(hosts) => {
                let made = rcgen::generate_simple_self_signed(hosts.clone())
                    .map_err(|e| invalid(format!("cannot make a self-signed certificate: {e}")))?;
                let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
                (vec![made.cert.der().clone()], key)
            }
        };
        let fingerprint = fingerprint(&chain[0]);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(format!("TLS: {e}")))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| invalid(format!("the certificate and key do not make a TLS server: {e}")))?;
        Ok(Loaded { config: Arc::new(config), fingerprint })
    }

    /// Loads the certificate again from its files (a self-signed one is kept).
    /// On an error the certificate in use stays.
    pub fn reload(&self) -> io::Result<()> {
        if let CertSource::SelfSigned(_) = self.source {
            return Ok(());
        }
        let loaded = Self::make(&self.source)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = loaded;
        Ok(())
    }

    /// The server configuration for a new connection.
    fn config(&self) -> Arc<ServerConfig> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).config.clone()
    }

    /// The SHA-256 fingerprint of the certificate in use, as browsers and
    /// `openssl x509 -fingerprint -sha256` show it (`AB:CD:...`).
    pub fn fingerprint(&self) -> String {
        self.current.read().unwrap_or_else(|e| e.into_inner()).fingerprint.clone()
    }

    /// Where it comes from.
    pub fn source(&self) -> &CertSource {
        &self.source
    }
}

fn read_pem(cert: &Path, key: &Path) -> io::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| invalid(format!("--cert {}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(format!("--cert {}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(invalid(format!("--cert {}: no certificate in it", cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| invalid(format!("--pkey {}: {e}", key.display())))?;
    Ok((chain, key))
}

/// The SHA-256 of a certificate, as colon-separated upper-case hex.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    digest.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// One TLS connection, server side.
pub struct TlsConn {
    conn: rustls::ServerConnection,
}

impl std::fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConn").field("handshaking", &self.conn.is_handshaking()).finish()
    }
}

impl TlsConn {
    /// A connection that will present `certs`' current certificate.
    pub fn new(certs: &Certs) -> io::Result<TlsConn> {
        let conn = rustls::ServerConnection::new(certs.config()).map_err(|e| invalid(format!("TLS: {e}")))?;
        Ok(TlsConn { conn })
    }

    /// Bytes read from the socket: appends the plaintext they complete to
    /// `plain`. An error (not TLS, a bad record, a failed handshake) ends the
    /// connection: send [`TlsConn::take_output`] (the alert) and close it.
    pub fn read(&mut self, mut data: &[u8], plain: &mut Vec<u8>) -> Result<(), rustls::Error> {
        while !data.is_empty() {
            // Bounded by rustls's own buffer limit; what it cannot take yet is
            // taken after the records it holds are processed.
            if self.conn.read_tls(&mut data).is_err() {
                return Err(rustls::Error::General("TLS input buffer full".into()));
            }
            let state = self.conn.process_new_packets()?;
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let at = plain.len();
                plain.resize(at + n, 0);
                let got = self.conn.reader().read(&mut plain[at..]).unwrap_or(0);
                plain.truncate(at + got);
            }
            if state.peer_has_closed() {
                break;
            }
        }
        Ok(())
    }

    /// Encrypts `data` for the peer (queued inside until
    /// [`TlsConn::take_output`]; before the handshake ends it waits there).
    pub fn write(&mut self, data: &[u8]) {
        let _ = self.conn.writer().write_all(data);
    }

    /// The records to send now: handshake messages, alerts, encrypted data.
    pub fn take_output(&mut self, out: &mut Vec<u8>) {
        while self.conn.wants_write() {
            if self.conn.write_tls(out).is_err() {
                break;
            }
        }
    }

    /// Says goodbye (close_notify); send [`TlsConn::take_output`] before closing.
    pub fn close(&mut self) {
        self.conn.send_close_notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that trusts anything (the test looks at what it was shown).
    #[derive(Debug)]
    struct Anything(Arc<rustls::crypto::CryptoProvider>);

    impl rustls::client::danger::ServerCertVerifier for Anything {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    #[test]
    fn a_handshake_and_data_both_ways_through_the_sans_io_connection() {
        let certs = Certs::load(CertSource::SelfSigned(vec!["localhost".into()])).unwrap();
        assert_eq!(certs.fingerprint().len(), 32 * 3 - 1);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Anything(provider)))
            .with_no_client_auth();
        let mut client = rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
        let mut server = TlsConn::new(&certs).unwrap();
        client.writer().write_all(b"hello server").unwrap();
        let mut plain = Vec::new();
        for _ in 0..10 {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            server.read(&wire, &mut plain).unwrap();
            let mut back = Vec::new();
            server.take_output(&mut back);
            let mut rd = &back[..];
            while !rd.is_empty() {
                client.read_tls(&mut rd).unwrap();
                client.process_new_packets().unwrap();
            }
        }
        assert_eq!(plain, b"hello server");
        let shown = client.peer_certificates().unwrap()[0].clone();
        assert_eq!(fingerprint(&shown), certs.fingerprint(), "the client was shown the certificate in use");
        server.write(b"hello client");
        let mut back = Vec::new();
        server.take_output(&mut back);
        let mut rd = &back[..];
        while !rd.is_empty() {
            client.read_tls(&mut rd).unwrap();
            client.process_new_packets().unwrap();
        }
        let mut got = vec![0; 64];
        let n = client.reader().read(&mut got).unwrap();
        assert_eq!(&got[..n], b"hello client");
        // Not TLS at all: an error, answered with an alert.
        let mut other = TlsConn::new(&certs).unwrap();
        assert!(other.read(b"GET / HTTP/1.1\r\n\r\n", &mut Vec::new()).is_err());
    }

    #[test]
    fn pem_files_load_and_reload_on_request() {
        let dir = std::env::temp_dir().join(format!("sb-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let write = |host: &str| {
            let made = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
            std::fs::write(&cert, made.cert.pem()).unwrap();
            std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
            fingerprint(made.cert.der())
        };
        let first = write("one.example");
        let certs = Certs::load(CertSource::Files { cert: cert.clone(), key: key.clone() }).unwrap();
        assert_eq!(certs.fingerprint(), first);
        let second = write("two.example");
        assert_eq!(certs.fingerprint(), first, "nothing changes until a reload");
        certs.reload().unwrap();
        assert_eq!(certs.fingerprint(), second);
        // A broken file on reload: the certificate in use stays.
        std::fs::write(&cert, "not pem").unwrap();
        assert!(certs.reload().is_err());
        assert_eq!(certs.fingerprint(), second);
        assert!(Certs::load(CertSource::Files { cert: dir.join("missing.pem"), key }).is_err());
    }
}
