//! The identity CA: trust anchors, the issuer, and the leaves it signs.
//!
//! Three levels, as in Linkerd: a long-lived **trust anchor** (self-signed; every proxy
//! trusts it), an **issuer** (an intermediate CA signed by the anchor, `pathlen:0`, whose
//! key the controller holds), and short-lived **leaves** (one per proxy, 24 h by default).
//!
//! Files in an identity directory (`--identity-dir`):
//!
//! | file | holds |
//! |---|---|
//! | `ca.crt` | the trust anchor(s), PEM; several during an anchor rotation |
//! | `issuer.crt` (or cert-manager's `tls.crt`) | the issuer certificate, PEM; it may be followed by intermediates up to an anchor |
//! | `issuer.key` (or cert-manager's `tls.key`) | the issuer's private key, PEM (PKCS#8, SEC1 `EC PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`) |

use crate::duration::date_time;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::{Path, PathBuf};
use time::OffsetDateTime;
use weft_api::IdentityName;
use x509_parser::certificate::X509Certificate;

/// The trust anchors file in an identity directory.
pub const ANCHORS_FILE: &str = "ca.crt";
/// The issuer certificate, as written by `weft identity generate`.
pub const ISSUER_CERT_FILE: &str = "issuer.crt";
/// The issuer key, as written by `weft identity generate`.
pub const ISSUER_KEY_FILE: &str = "issuer.key";
/// The issuer certificate in a cert-manager (`kubernetes.io/tls`) Secret.
pub const TLS_CERT_FILE: &str = "tls.crt";
/// The issuer key in a cert-manager (`kubernetes.io/tls`) Secret.
pub const TLS_KEY_FILE: &str = "tls.key";

/// How far in the past a leaf's `notBefore` is set, for clocks that disagree a little.
pub const CLOCK_SKEW: time::Duration = time::Duration::minutes(1);

/// Why the CA could not be loaded, generated or used. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no issuer certificate in {dir}: expected {ISSUER_CERT_FILE} and {ISSUER_KEY_FILE} (from `weft identity generate`) or {TLS_CERT_FILE} and {TLS_KEY_FILE} (a cert-manager Secret)")]
    NoIssuer { dir: PathBuf },
    #[error("{what} {path} is not PEM: {reason}")]
    NotPem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{what} {path}: {reason}")]
    Invalid {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("issuer key {key} does not match the issuer certificate {cert} (the certificate names a different public key)")]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    #[error("issuer certificate {issuer} is not signed by any trust anchor in {anchors}")]
    NotSignedByAnchor { issuer: PathBuf, anchors: PathBuf },
    #[error("{what} {path} expired on {on}")]
    Expired {
        what: &'static str,
        path: PathBuf,
        on: String,
    },
    #[error(
        "{what} {path} is not valid before {from} (now {now}); is this machine's clock right?"
    )]
    NotYetValid {
        what: &'static str,
        path: PathBuf,
        from: String,
        now: String,
    },
    #[error("cannot generate certificates: {0}")]
    Generate(String),
    #[error("cannot sign a certificate: {0}")]
    Sign(String),
}

/// Where the three inputs of a [`Ca`] come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityFiles {
    pub anchors: PathBuf,
    pub issuer_cert: PathBuf,
    pub issuer_key: PathBuf,
}

impl IdentityFiles {
    /// Finds the files in `dir`: `ca.crt`, plus `issuer.crt`/`issuer.key` if `issuer.crt`
    /// exists, else cert-manager's `tls.crt`/`tls.key`.
    pub fn in_dir(dir: &Path) -> Result<Self, CaError> {
        let anchors = dir.join(ANCHORS_FILE);
        let (cert, key) = if dir.join(ISSUER_CERT_FILE).exists() {
            (ISSUER_CERT_FILE, ISSUER_KEY_FILE)
        } else if dir.join(TLS_CERT_FILE).exists() {
            (TLS_CERT_FILE, TLS_KEY_FILE)
        } else if !dir.is_dir() {
            return Err(CaError::Read {
                what: "identity directory",
                path: dir.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
            });
        } else {
            return Err(CaError::NoIssuer {
                dir: dir.to_path_buf(),
            });
        };
        Ok(Self {
            anchors,
            issuer_cert: dir.join(cert),
            issuer_key: dir.join(key),
        })
    }
}

/// A freshly signed leaf.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub der: CertificateDer<'static>,
    pub not_after: OffsetDateTime,
}

/// A loaded, checked issuer plus the trust anchors it chains to.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The issuer, then any intermediates between it and the anchor (never an anchor).
    chain: Vec<CertificateDer<'static>>,
    issuer_not_after: OffsetDateTime,
    anchor_not_after: OffsetDateTime,
    issuer_subject: String,
    /// Every trust anchor, PEM: what proxies and the webhook's callers trust.
    anchors_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("issuer", &self.issuer_subject)
            .field("issuer_not_after", &self.issuer_not_after)
            .field("anchor_not_after", &self.anchor_not_after)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Reads and checks the files.
    pub fn load(files: &IdentityFiles, now: OffsetDateTime) -> Result<Self, CaError> {
        let read = |what, path: &Path| {
            std::fs::read(path).map_err(|source| CaError::Read {
                what,
                path: path.to_path_buf(),
                source,
            })
        };
        let anchors = read("trust anchors file", &files.anchors)?;
        let issuer = read("issuer certificate", &files.issuer_cert)?;
        let key = read("issuer key", &files.issuer_key)?;
        Self::from_pem(files, &anchors, &issuer, &key, now)
    }

    /// Checks PEM contents; `files` only names them in errors.
    pub fn from_pem(
        files: &IdentityFiles,
        anchors_pem: &[u8],
        issuer_pem: &[u8],
        key_pem: &[u8],
        now: OffsetDateTime,
    ) -> Result<Self, CaError> {
        let anchors = read_certs("trust anchors file", &files.anchors, anchors_pem)?;
        let mut parsed_anchors = Vec::with_capacity(anchors.len());
        for (i, der) in anchors.iter().enumerate() {
            let cert = parse_cert("trust anchors file", &files.anchors, der)?;
            if !cert.is_ca() {
                return Err(invalid(
                    "trust anchors file",
                    &files.anchors,
                    format!(
                        "certificate {} is not a CA (basicConstraints CA:TRUE is missing)",
                        i + 1
                    ),
                ));
            }
            parsed_anchors.push(cert);
        }

        let what = "issuer certificate";
        let chain = read_certs(what, &files.issuer_cert, issuer_pem)?;
        let mut parsed_chain = Vec::with_capacity(chain.len());
        for der in &chain {
            parsed_chain.push(parse_cert(what, &files.issuer_cert, der)?);
        }
        let issuer_cert = &parsed_chain[0];
        if !issuer_cert.is_ca() {
            return Err(invalid(
                what,
                &files.issuer_cert,
                "it is not a CA certificate (basicConstraints CA:TRUE is missing)",
            ));
        }
        if let Ok(Some(ku)) = issuer_cert.key_usage() {
            if !ku.value.key_cert_sign() {
                return Err(invalid(
                    what,
                    &files.issuer_cert,
                    "its key usage does not allow signing certificates (keyCertSign)",
                ));
            }
        }
        check_validity(what, &files.issuer_cert, issuer_cert, now)?;

        // Each certificate in the issuer file is signed by the next; the last one is an
        // anchor or is signed by one.
        for pair in parsed_chain.windows(2) {
            if !signed_by(&pair[0], &pair[1]) {
                return Err(invalid(
                    what,
                    &files.issuer_cert,
                    format!(
                        "the certificates after the first must form its chain, but {:?} is not signed by {:?}",
                        pair[0].subject().to_string(),
                        pair[1].subject().to_string()
                    ),
                ));
            }
        }
        let last = chain.len() - 1;
        let anchor_index = anchors
            .iter()
            .position(|a| *a == chain[last])
            .or_else(|| {
                parsed_anchors
                    .iter()
                    .position(|a| signed_by(&parsed_chain[last], a))
            })
            .ok_or_else(|| CaError::NotSignedByAnchor {
                issuer: files.issuer_cert.clone(),
                anchors: files.anchors.clone(),
            })?;
        let anchor = &parsed_anchors[anchor_index];
        check_validity("trust anchor", &files.anchors, anchor, now)?;

        let issuer_spki = issuer_cert.public_key();
        let key = read_key(&files.issuer_key, key_pem, issuer_spki.raw)?;
        if key.public_key_raw() != issuer_spki.subject_public_key.data.as_ref() {
            return Err(CaError::KeyMismatch {
                key: files.issuer_key.clone(),
                cert: files.issuer_cert.clone(),
            });
        }
        let issuer_not_after = issuer_cert.validity().not_after.to_datetime();
        let anchor_not_after = anchor.validity().not_after.to_datetime();
        let issuer_subject = issuer_cert.subject().to_string();
        let issuer = Issuer::from_ca_cert_der(&chain[0], key)
            .map_err(|e| invalid(what, &files.issuer_cert, e.to_string()))?;
        drop(parsed_chain);
        drop(parsed_anchors);
        let anchors_pem = anchors
            .iter()
            .map(|a| pem_encode("CERTIFICATE", a))
            .collect();
        let chain = chain.into_iter().filter(|c| !anchors.contains(c)).collect();
        Ok(Self {
            issuer,
            chain,
            issuer_not_after,
            anchor_not_after,
            issuer_subject,
            anchors_pem,
        })
    }

    /// Signs a leaf for `identity`: the identity as the only DNS SAN, EKU serverAuth and
    /// clientAuth, not a CA. The caller has chosen the validity window.
    pub fn sign_leaf(
        &self,
        public_key: &impl PublicKeyData,
        identity: &IdentityName,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Leaf, CaError> {
        self.sign_leaf_with_names(public_key, identity, &[], not_before, not_after)
    }

    /// [`Ca::sign_leaf`] with more DNS names after the identity: only the controller's own
    /// serving certificate has any (its Service names, for the admission webhook).
    pub fn sign_leaf_with_names(
        &self,
        public_key: &impl PublicKeyData,
        identity: &IdentityName,
        extra_names: &[String],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Leaf, CaError> {
        let mut sans = Vec::with_capacity(1 + extra_names.len());
        for name in std::iter::once(identity.to_string()).chain(extra_names.iter().cloned()) {
            let name = name
                .try_into()
                .map_err(|e: rcgen::Error| CaError::Sign(e.to_string()))?;
            sans.push(SanType::DnsName(name));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(random_serial().map_err(CaError::Sign)?);
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(public_key, &self.issuer)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        Ok(Leaf {
            der: cert.der().clone(),
            not_after,
        })
    }

    /// The chain a proxy presents: the leaf, then the issuer (and any intermediates).
    pub fn chain_pem(&self, leaf: &Leaf) -> String {
        let mut out = pem_encode("CERTIFICATE", &leaf.der);
        for c in &self.chain {
            out.push_str(&pem_encode("CERTIFICATE", c));
        }
        out
    }

    /// The same chain as DER, for serving TLS.
    pub fn chain_der(&self, leaf: &Leaf) -> Vec<CertificateDer<'static>> {
        let mut out = vec![leaf.der.clone()];
        out.extend(self.chain.iter().cloned());
        out
    }

    /// When the issuer certificate expires; no leaf outlives it.
    pub fn issuer_not_after(&self) -> OffsetDateTime {
        self.issuer_not_after
    }

    /// When the anchor the issuer chains to expires.
    pub fn anchor_not_after(&self) -> OffsetDateTime {
        self.anchor_not_after
    }

    /// The issuer's subject, for logs.
    /// The trust anchors, PEM.
    pub fn anchors_pem(&self) -> &str {
        &self.anchors_pem
    }

    pub fn issuer_subject(&self) -> &str {
        &self.issuer_subject
    }
}

/// A new trust anchor and issuer, as PEM.
#[derive(Debug, Clone)]
pub struct Generated {
    pub anchor_pem: String,
    pub issuer_pem: String,
    pub issuer_key_pem: String,
    pub anchor_not_after: OffsetDateTime,
    pub issuer_not_after: OffsetDateTime,
}

/// Creates a self-signed ECDSA P-256 trust anchor and an issuer signed by it (`pathlen:0`).
/// The anchor's private key is not kept.
pub fn generate(
    trust_domain: &str,
    control_plane_namespace: &str,
    anchor_lifetime: std::time::Duration,
    issuer_lifetime: std::time::Duration,
    now: OffsetDateTime,
) -> Result<Generated, CaError> {
    weft_api::certify::controller_identity(control_plane_namespace, trust_domain)
        .map_err(|e| CaError::Generate(e.to_string()))?;
    if issuer_lifetime > anchor_lifetime {
        return Err(CaError::Generate(format!(
            "the issuer lifetime ({}) must not be longer than the trust anchor's ({})",
            crate::duration::format_duration(issuer_lifetime),
            crate::duration::format_duration(anchor_lifetime)
        )));
    }
    let now = whole_seconds(now);
    let not_before = now - CLOCK_SKEW;
    let anchor_not_after = add(now, anchor_lifetime)?;
    let issuer_not_after = add(now, issuer_lifetime)?;
    let gen = |e: rcgen::Error| CaError::Generate(e.to_string());

    let anchor_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen)?;
    let mut anchor = CertificateParams::default();
    anchor.distinguished_name = subject(
        format!("root.{control_plane_namespace}.{trust_domain}"),
        "weft trust anchor",
    );
    anchor.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    anchor.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    anchor.not_before = not_before;
    anchor.not_after = anchor_not_after;
    anchor.serial_number = Some(random_serial().map_err(CaError::Generate)?);
    let anchor_cert = anchor.self_signed(&anchor_key).map_err(gen)?;

    let issuer_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen)?;
    let mut issuer = CertificateParams::default();
    issuer.distinguished_name = subject(
        format!("identity.{control_plane_namespace}.{trust_domain}"),
        "weft issuer",
    );
    issuer.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    issuer.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    issuer.not_before = not_before;
    issuer.not_after = issuer_not_after;
    issuer.serial_number = Some(random_serial().map_err(CaError::Generate)?);
    issuer.use_authority_key_identifier_extension = true;
    let anchor_issuer = Issuer::new(anchor, anchor_key);
    let issuer_cert = issuer.signed_by(&issuer_key, &anchor_issuer).map_err(gen)?;

    Ok(Generated {
        anchor_pem: anchor_cert.pem(),
        issuer_pem: issuer_cert.pem(),
        issuer_key_pem: issuer_key.serialize_pem(),
        anchor_not_after,
        issuer_not_after,
    })
}

/// `now` without its fraction of a second (certificates carry whole seconds).
pub fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(t.unix_timestamp()).unwrap_or(t)
}

fn add(now: OffsetDateTime, d: std::time::Duration) -> Result<OffsetDateTime, CaError> {
    time::Duration::try_from(d)
        .ok()
        .and_then(|d| now.checked_add(d))
        .filter(|t| t.year() <= 9999)
        .ok_or_else(|| {
            CaError::Generate(format!(
                "lifetime {} is too long",
                crate::duration::format_duration(d)
            ))
        })
}

/// A common name if it fits X.509's 64-character limit, else the fallback.
fn subject(preferred: String, fallback: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    let cn = if preferred.len() <= 64 {
        preferred
    } else {
        fallback.to_string()
    };
    dn.push(DnType::CommonName, cn);
    dn
}

/// 128 random bits, from the same source as rustls's.
fn random_serial() -> Result<SerialNumber, String> {
    let mut bytes = [0u8; 16];
    crate::tls::provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| "no random numbers available".to_string())?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01; // positive and exactly 16 bytes long
    Ok(SerialNumber::from_slice(&bytes))
}

fn invalid(what: &'static str, path: &Path, reason: impl Into<String>) -> CaError {
    CaError::Invalid {
        what,
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn read_certs(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, CaError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CaError::NotPem {
            what,
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CaError::NotPem {
            what,
            path: path.to_path_buf(),
            reason: "no \"-----BEGIN CERTIFICATE-----\" block found".to_string(),
        });
    }
    Ok(certs)
}

fn parse_cert<'a>(
    what: &'static str,
    path: &Path,
    der: &'a [u8],
) -> Result<X509Certificate<'a>, CaError> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(invalid(what, path, "trailing bytes after a certificate")),
        Err(e) => Err(invalid(what, path, format!("not a valid certificate: {e}"))),
    }
}

fn signed_by(cert: &X509Certificate<'_>, signer: &X509Certificate<'_>) -> bool {
    cert.issuer().as_raw() == signer.subject().as_raw()
        && cert.verify_signature(Some(signer.public_key())).is_ok()
}

fn check_validity(
    what: &'static str,
    path: &Path,
    cert: &X509Certificate<'_>,
    now: OffsetDateTime,
) -> Result<(), CaError> {
    let v = cert.validity();
    let not_after = v.not_after.to_datetime();
    let not_before = v.not_before.to_datetime();
    if now > not_after {
        return Err(CaError::Expired {
            what,
            path: path.to_path_buf(),
            on: date_time(not_after),
        });
    }
    if now + CLOCK_SKEW < not_before {
        return Err(CaError::NotYetValid {
            what,
            path: path.to_path_buf(),
            from: date_time(not_before),
            now: date_time(now),
        });
    }
    Ok(())
}

/// Reads a private key in PKCS#8, SEC1 or PKCS#1 form. ring (and so rcgen) only takes
/// PKCS#8, and cert-manager writes SEC1/PKCS#1 by default, so the other two are wrapped in
/// a PKCS#8 envelope carrying the certificate's own algorithm identifier.
fn read_key(path: &Path, pem: &[u8], spki: &[u8]) -> Result<KeyPair, CaError> {
    let what = "issuer key";
    let key = PrivateKeyDer::from_pem_slice(pem).map_err(|e| CaError::NotPem {
        what,
        path: path.to_path_buf(),
        reason: match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "no \"-----BEGIN PRIVATE KEY-----\" (or EC/RSA PRIVATE KEY) block found".to_string()
            }
            other => other.to_string(),
        },
    })?;
    let pkcs8 = match &key {
        PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
        PrivateKeyDer::Sec1(k) => wrap_pkcs8(spki, k.secret_sec1_der()),
        PrivateKeyDer::Pkcs1(k) => wrap_pkcs8(spki, k.secret_pkcs1_der()),
        _ => return Err(invalid(what, path, "unsupported private key format")),
    };
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8));
    KeyPair::try_from(&key).map_err(|_| {
        invalid(
            what,
            path,
            "not a usable private key (ECDSA P-256/P-384, Ed25519 or RSA, unencrypted) for the issuer certificate",
        )
    })
}

/// `PrivateKeyInfo ::= SEQUENCE { version 0, algorithm (from the SPKI), OCTET STRING key }`.
fn wrap_pkcs8(spki: &[u8], key: &[u8]) -> Vec<u8> {
    // SPKI ::= SEQUENCE { AlgorithmIdentifier, BIT STRING }: take the AlgorithmIdentifier.
    let alg_id = der_content(spki)
        .and_then(|inner| der_tlv(inner).map(|len| &inner[..len]))
        .unwrap_or(&[]);
    let mut body = vec![0x02, 0x01, 0x00];
    body.extend_from_slice(alg_id);
    body.extend(der_encode(0x04, key));
    der_encode(0x30, &body)
}

/// The length of the TLV at the start of `b` (header and content).
fn der_tlv(b: &[u8]) -> Option<usize> {
    let (header, len) = der_header(b)?;
    let total = header.checked_add(len)?;
    (total <= b.len()).then_some(total)
}

/// The content of the TLV at the start of `b`.
fn der_content(b: &[u8]) -> Option<&[u8]> {
    let (header, len) = der_header(b)?;
    b.get(header..header.checked_add(len)?)
}

fn der_header(b: &[u8]) -> Option<(usize, usize)> {
    let first = *b.get(1)?;
    if first < 0x80 {
        return Some((2, first as usize));
    }
    let n = (first & 0x7f) as usize;
    if n == 0 || n > 4 {
        return None;
    }
    let len = b
        .get(2..2 + n)?
        .iter()
        .fold(0usize, |acc, &x| (acc << 8) | x as usize);
    Some((2 + n, len))
}

fn der_encode(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// PEM with 64-character lines.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[(n >> (18 - 6 * i) & 0x3f) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    pub(crate) const HOUR: Duration = Duration::from_secs(3600);

    pub(crate) fn now() -> OffsetDateTime {
        whole_seconds(OffsetDateTime::now_utc())
    }

    pub(crate) fn files() -> IdentityFiles {
        IdentityFiles {
            anchors: "ca.crt".into(),
            issuer_cert: "issuer.crt".into(),
            issuer_key: "issuer.key".into(),
        }
    }

    pub(crate) fn generated() -> Generated {
        generate("cluster.local", "weft", 48 * HOUR, 24 * HOUR, now()).unwrap()
    }

    pub(crate) fn load(g: &Generated) -> Result<Ca, CaError> {
        Ca::from_pem(
            &files(),
            g.anchor_pem.as_bytes(),
            g.issuer_pem.as_bytes(),
            g.issuer_key_pem.as_bytes(),
            now(),
        )
    }

    fn parse(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    #[test]
    fn generates_anchor_and_issuer() {
        let t = now();
        let g = generate("cluster.local", "weft", 87_600 * HOUR, 8_760 * HOUR, t).unwrap();
        let anchor_der = parse(&g.anchor_pem);
        let issuer_der = parse(&g.issuer_pem);
        let (_, anchor) = x509_parser::parse_x509_certificate(&anchor_der).unwrap();
        let (_, issuer) = x509_parser::parse_x509_certificate(&issuer_der).unwrap();

        assert_eq!(anchor.subject().to_string(), "CN=root.weft.cluster.local");
        assert_eq!(
            issuer.subject().to_string(),
            "CN=identity.weft.cluster.local"
        );
        assert_eq!(issuer.issuer(), anchor.subject());
        assert!(anchor.verify_signature(None).is_ok(), "self-signed");
        assert!(issuer.verify_signature(Some(anchor.public_key())).is_ok());
        let bc = issuer.basic_constraints().unwrap().unwrap().value;
        assert!(bc.ca);
        assert_eq!(bc.path_len_constraint, Some(0));
        assert!(anchor.basic_constraints().unwrap().unwrap().value.ca);
        for c in [&anchor, &issuer] {
            assert!(c.key_usage().unwrap().unwrap().value.key_cert_sign());
            assert_eq!(
                c.public_key().algorithm.algorithm,
                x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
            );
            assert_eq!(c.validity().not_before.timestamp(), t.unix_timestamp() - 60);
        }
        assert_eq!(
            anchor.validity().not_after.timestamp(),
            t.unix_timestamp() + 87_600 * 3600
        );
        assert_eq!(
            issuer.validity().not_after.timestamp(),
            t.unix_timestamp() + 8_760 * 3600
        );
        assert_eq!(
            g.issuer_not_after.unix_timestamp(),
            t.unix_timestamp() + 8_760 * 3600
        );
        assert!(g.issuer_key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));

        let ca = load(&g).unwrap();
        assert_eq!(ca.issuer_not_after(), g.issuer_not_after);
        assert_eq!(ca.anchor_not_after(), g.anchor_not_after);
    }

    #[test]
    fn generate_refuses_bad_parameters() {
        let t = now();
        let cases = [
            (
                generate("cluster.local", "weft", HOUR, 2 * HOUR, t),
                "must not be longer",
            ),
            (
                generate("Cluster..local", "weft", 2 * HOUR, HOUR, t),
                "trust domain",
            ),
            (
                generate("cluster.local", "we_ft", 2 * HOUR, HOUR, t),
                "namespace",
            ),
            (
                generate("cluster.local", "weft", 100_000_000 * HOUR, HOUR, t),
                "too long",
            ),
        ];
        for (r, want) in cases {
            let err = r.unwrap_err().to_string();
            assert!(err.contains(want), "{err} / {want}");
        }
    }

    #[test]
    fn long_trust_domains_get_a_short_common_name() {
        let td = format!("{}.example.org", "a".repeat(60));
        let g = generate(&td, "weft", 2 * HOUR, HOUR, now()).unwrap();
        let der = parse(&g.anchor_pem);
        let (_, anchor) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(anchor.subject().to_string(), "CN=weft trust anchor");
        load(&g).unwrap();
    }

    #[test]
    fn load_errors_name_the_file_and_the_problem() {
        let g = generated();
        let other = generated();
        let t = now();
        let expired = generate(
            "cluster.local",
            "weft",
            48 * HOUR,
            HOUR,
            t - time::Duration::hours(3),
        )
        .unwrap();
        let key_pem_sec1 = {
            // The inner ECPrivateKey of the PKCS#8 document, as openssl and cert-manager write it.
            let pkcs8 = PrivateKeyDer::from_pem_slice(other.issuer_key_pem.as_bytes()).unwrap();
            let der = pkcs8.secret_der().to_vec();
            let inner = der_content(&der).unwrap();
            let version = der_tlv(inner).unwrap();
            let alg = der_tlv(&inner[version..]).unwrap();
            let octets = der_content(&inner[version + alg..]).unwrap().to_vec();
            pem_encode("EC PRIVATE KEY", &octets)
        };
        let cases: Vec<(&str, &str, &str, &str)> = vec![
            // (anchors, issuer, key, expected message)
            (
                "garbage",
                &g.issuer_pem,
                &g.issuer_key_pem,
                "trust anchors file ca.crt is not PEM: no \"-----BEGIN CERTIFICATE-----\" block found",
            ),
            (
                &g.anchor_pem,
                "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
                &g.issuer_key_pem,
                "issuer certificate issuer.crt is not PEM",
            ),
            (
                &g.anchor_pem,
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                &g.issuer_key_pem,
                "issuer certificate issuer.crt: not a valid certificate",
            ),
            (&g.anchor_pem, &g.issuer_pem, "", "issuer key issuer.key is not PEM: no \"-----BEGIN PRIVATE KEY-----\""),
            (
                &g.anchor_pem,
                &g.issuer_pem,
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "issuer key issuer.key: not a usable private key",
            ),
            (
                &g.anchor_pem,
                &g.issuer_pem,
                &other.issuer_key_pem,
                "issuer key issuer.key does not match the issuer certificate issuer.crt",
            ),
            (
                &g.anchor_pem,
                &g.issuer_pem,
                &key_pem_sec1,
                "issuer key issuer.key does not match the issuer certificate issuer.crt",
            ),
            (
                &other.anchor_pem,
                &g.issuer_pem,
                &g.issuer_key_pem,
                "issuer certificate issuer.crt is not signed by any trust anchor in ca.crt",
            ),
            (
                &g.anchor_pem,
                &g.anchor_pem,
                &g.issuer_key_pem,
                "issuer key issuer.key does not match the issuer certificate issuer.crt",
            ),
            (
                &expired.anchor_pem,
                &expired.issuer_pem,
                &expired.issuer_key_pem,
                "issuer certificate issuer.crt expired on ",
            ),
        ];
        for (anchors, issuer, key, want) in cases {
            let err = Ca::from_pem(
                &files(),
                anchors.as_bytes(),
                issuer.as_bytes(),
                key.as_bytes(),
                t,
            )
            .unwrap_err()
            .to_string();
            assert!(err.starts_with(want), "got:  {err}\nwant: {want}");
        }
    }

    #[test]
    fn an_issuer_is_not_valid_before_its_time() {
        let g = generated();
        let err = Ca::from_pem(
            &files(),
            g.anchor_pem.as_bytes(),
            g.issuer_pem.as_bytes(),
            g.issuer_key_pem.as_bytes(),
            now() - time::Duration::days(400),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("is not valid before"), "{err}");
        assert!(err.contains("clock"), "{err}");
    }

    #[test]
    fn accepts_cert_manager_style_inputs() {
        let g = generated();
        // SEC1 ("EC PRIVATE KEY") key, and a tls.crt that carries the anchor after the issuer.
        let pkcs8 = PrivateKeyDer::from_pem_slice(g.issuer_key_pem.as_bytes()).unwrap();
        let der = pkcs8.secret_der().to_vec();
        let inner = der_content(&der).unwrap();
        let version = der_tlv(inner).unwrap();
        let alg = der_tlv(&inner[version..]).unwrap();
        let sec1 = der_content(&inner[version + alg..]).unwrap().to_vec();
        let key_pem = pem_encode("EC PRIVATE KEY", &sec1);
        let tls_crt = format!("{}{}", g.issuer_pem, g.anchor_pem);
        let ca = Ca::from_pem(
            &files(),
            g.anchor_pem.as_bytes(),
            tls_crt.as_bytes(),
            key_pem.as_bytes(),
            now(),
        )
        .unwrap();
        // The anchor is not sent in chains.
        assert_eq!(ca.chain.len(), 1);
        // Two anchors (a rotation in progress): the issuer chains to the second.
        let old = generated();
        let bundle = format!("{}{}", old.anchor_pem, g.anchor_pem);
        let ca = Ca::from_pem(
            &files(),
            bundle.as_bytes(),
            g.issuer_pem.as_bytes(),
            g.issuer_key_pem.as_bytes(),
            now(),
        )
        .unwrap();
        assert_eq!(ca.anchor_not_after(), g.anchor_not_after);
    }

    #[test]
    fn finds_files_in_a_directory() {
        let dir = std::env::temp_dir().join(format!("weft-ca-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let err = IdentityFiles::in_dir(&dir).unwrap_err().to_string();
        assert!(err.contains("expected issuer.crt and issuer.key"), "{err}");
        assert!(err.contains("tls.crt and tls.key"), "{err}");
        std::fs::write(dir.join("tls.crt"), "").unwrap();
        assert_eq!(
            IdentityFiles::in_dir(&dir).unwrap().issuer_key,
            dir.join("tls.key")
        );
        std::fs::write(dir.join("issuer.crt"), "").unwrap();
        let f = IdentityFiles::in_dir(&dir).unwrap();
        assert_eq!(f.anchors, dir.join("ca.crt"));
        assert_eq!(f.issuer_cert, dir.join("issuer.crt"));
        assert_eq!(f.issuer_key, dir.join("issuer.key"));
        let err = Ca::load(&f, now()).unwrap_err().to_string();
        assert!(err.starts_with("cannot read trust anchors file"), "{err}");
        assert!(err.contains("ca.crt"), "{err}");
        let missing = dir.join("nope");
        let err = IdentityFiles::in_dir(&missing).unwrap_err().to_string();
        assert!(
            err.contains("identity directory") && err.contains("nope"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pem_encoding_round_trips() {
        for len in [0usize, 1, 2, 3, 47, 48, 49, 100, 1000] {
            let der: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let pem = pem_encode("CERTIFICATE", &der);
            if len > 0 {
                let back = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
                assert_eq!(back.as_ref(), &der[..], "{len}");
            }
            assert!(pem.lines().all(|l| l.len() <= 64 || l.starts_with("-----")));
        }
    }

    #[test]
    fn der_lengths() {
        for len in [0usize, 1, 127, 128, 255, 256, 70_000] {
            let content = vec![7u8; len];
            let enc = der_encode(0x04, &content);
            assert_eq!(der_tlv(&enc), Some(enc.len()), "{len}");
            assert_eq!(der_content(&enc), Some(&content[..]), "{len}");
        }
        assert_eq!(der_tlv(&[0x30]), None);
        assert_eq!(der_tlv(&[0x30, 0x05, 0x00]), None);
        assert_eq!(der_tlv(&[0x30, 0x85, 0, 0, 0, 0, 1]), None);
    }
}
