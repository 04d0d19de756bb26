//! JWT signature checks on ring, plugged into jsonwebtoken as its process-wide crypto provider.
//!
//! Why not jsonwebtoken's own backends: its RustCrypto backend verifies RS256 in hundreds of
//! microseconds and ES256 in more (`cargo xtask bench auth` measured 5-8x ring's time on this
//! box), which alone breaks the 0.2 ms p99 budget per request; its aws-lc-rs backend needs cmake
//! and NASM to build. ring is already linked for TLS. Only verification of asymmetric
//! signatures (the per-request path) runs on ring: HMAC checks, signing (tests, tools) and JWK
//! helpers stay with the RustCrypto backend.

use std::sync::LazyLock;

use jsonwebtoken::{
    Algorithm, DecodingKey, DecodingKeyKind,
    crypto::{CryptoProvider, JwtVerifier, rust_crypto},
    errors::{ErrorKind, Result},
    signature::{Error, Verifier},
};
use ring::signature::{self as ring_sig, UnparsedPublicKey, VerificationAlgorithm};

static PROVIDER: LazyLock<CryptoProvider> = LazyLock::new(|| CryptoProvider {
    signer_factory: rust_crypto::DEFAULT_PROVIDER.signer_factory,
    verifier_factory: new_verifier,
    key_utils: rust_crypto::DEFAULT_PROVIDER.key_utils.clone(),
});

/// Makes ring verify JWT signatures in this process. Idempotent; must run before the first
/// token is decoded (jsonwebtoken fixes its provider on first use), so the daemon calls it at
/// start and building the auth stage calls it again.
pub fn install() {
    if CryptoProvider::install_default(&PROVIDER).is_err() {
        tracing::debug!("jsonwebtoken crypto provider was already chosen");
    }
}

/// The verifier for one algorithm and key: ring for RSA, ECDSA and EdDSA, RustCrypto for HMAC.
pub(crate) fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    let check: &'static dyn VerificationAlgorithm = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            return (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(alg, key);
        }
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => match rsa_parameters(*alg) {
            Some(p) => p,
            None => return Err(ErrorKind::InvalidAlgorithm.into()),
        },
        Algorithm::ES256 => &ring_sig::ECDSA_P256_SHA256_FIXED,
        Algorithm::ES384 => &ring_sig::ECDSA_P384_SHA384_FIXED,
        Algorithm::EdDSA => &ring_sig::ED25519,
        _ => return Err(ErrorKind::InvalidAlgorithm.into()),
    };
    // The key must be of the algorithm's family: the same rule jsonwebtoken's backends apply.
    if key.family() != alg.family() {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    Ok(Box::new(RingVerifier {
        alg: *alg,
        check,
        key: key.clone(),
    }))
}

/// ring's parameters for the RSA algorithms (PKCS#1 v1.5 and PSS, 2048-8192-bit keys).
fn rsa_parameters(alg: Algorithm) -> Option<&'static ring_sig::RsaParameters> {
    Some(match alg {
        Algorithm::RS256 => &ring_sig::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &ring_sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &ring_sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &ring_sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &ring_sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &ring_sig::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

struct RingVerifier {
    alg: Algorithm,
    check: &'static dyn VerificationAlgorithm,
    key: DecodingKey,
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> std::result::Result<(), Error> {
        match self.key.kind() {
            // RSA public keys (PKCS#1 DER), EC points (uncompressed), Ed25519 keys (raw).
            DecodingKeyKind::SecretOrDer(bytes) => UnparsedPublicKey::new(self.check, bytes)
                .verify(msg, sig)
                .map_err(|_| Error::new()),
            // From a JWK's `n` and `e`.
            DecodingKeyKind::RsaModulusExponent { n, e } => {
                let Some(params) = rsa_parameters(self.alg) else {
                    return Err(Error::new());
                };
                ring_sig::RsaPublicKeyComponents { n, e }
                    .verify(params, msg, sig)
                    .map_err(|_| Error::new())
            }
        }
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header};

    use super::*;

    /// Signs with the RustCrypto backend (independent of ring) and checks with ring; a flipped
    /// bit and a key of another family are refused.
    fn round_trip(alg: Algorithm, enc: &EncodingKey, dec: &DecodingKey) {
        let signer = (rust_crypto::DEFAULT_PROVIDER.signer_factory)(&alg, enc).expect("signer");
        assert_eq!(signer.algorithm(), alg);
        let msg = b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ0ZXN0In0";
        let sig = signer.try_sign(msg).expect("sign");
        let verifier = new_verifier(&alg, dec).expect("verifier");
        verifier.verify(msg, &sig).expect("valid signature");
        let mut bad = sig.clone();
        bad[0] ^= 1;
        assert!(verifier.verify(msg, &bad).is_err(), "{alg:?}: tampered");
        assert!(
            verifier.verify(b"other", &sig).is_err(),
            "{alg:?}: other msg"
        );
        let hmac = DecodingKey::from_secret(b"secret");
        assert!(new_verifier(&alg, &hmac).is_err(), "{alg:?}: HMAC key");
    }

    /// `SEQUENCE { INTEGER n, INTEGER e }` (DER) -> (n, e) without leading zeros.
    fn rsa_public_key_components(der: &[u8]) -> (Vec<u8>, Vec<u8>) {
        fn header(b: &[u8]) -> (usize, usize) {
            match b[1] {
                l if l < 0x80 => (2, usize::from(l)),
                l => {
                    let k = usize::from(l & 0x7f);
                    let len = b[2..2 + k]
                        .iter()
                        .fold(0usize, |a, &x| (a << 8) | usize::from(x));
                    (2 + k, len)
                }
            }
        }
        let (h, _) = header(der);
        let mut rest = &der[h..];
        let mut ints = Vec::new();
        for _ in 0..2 {
            assert_eq!(rest[0], 0x02, "INTEGER");
            let (h, len) = header(rest);
            let mut v = &rest[h..h + len];
            while v.first() == Some(&0) {
                v = &v[1..];
            }
            ints.push(v.to_vec());
            rest = &rest[h + len..];
        }
        (ints.remove(0), ints.remove(0))
    }

    #[test]
    fn ring_checks_what_rustcrypto_signs() {
        let rsa_priv = include_bytes!("../../tests/fixtures/jwt-rsa.key");
        let rsa_pub = include_bytes!("../../tests/fixtures/jwt-rsa.pub");
        let enc = EncodingKey::from_rsa_pem(rsa_priv).expect("rsa key");
        let dec = DecodingKey::from_rsa_pem(rsa_pub).expect("rsa public key");
        for alg in [Algorithm::RS256, Algorithm::RS512, Algorithm::PS256] {
            round_trip(alg, &enc, &dec);
        }
        // The same key as a JWK's `n` and `e` (read from the PKCS#1 RSAPublicKey the PEM holds).
        let DecodingKeyKind::SecretOrDer(der) = dec.kind() else {
            panic!("PEM keys are DER")
        };
        let (n, e) = rsa_public_key_components(der);
        let from_jwk = DecodingKey::from_rsa_raw_components(&n, &e);
        for alg in [Algorithm::RS256, Algorithm::RS384, Algorithm::PS512] {
            round_trip(alg, &enc, &from_jwk);
        }

        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("ec");
        let enc = EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).expect("ec key");
        let dec = DecodingKey::from_ec_pem(ec.public_key_pem().as_bytes()).expect("ec pub");
        round_trip(Algorithm::ES256, &enc, &dec);

        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed");
        let enc = EncodingKey::from_ed_pem(ed.serialize_pem().as_bytes()).expect("ed key");
        let dec = DecodingKey::from_ed_pem(ed.public_key_pem().as_bytes()).expect("ed pub");
        round_trip(Algorithm::EdDSA, &enc, &dec);
    }

    #[test]
    fn whole_tokens_verify_through_the_installed_provider() {
        install();
        let rsa_priv = include_bytes!("../../tests/fixtures/jwt-rsa.key");
        let rsa_pub = include_bytes!("../../tests/fixtures/jwt-rsa.pub");
        let enc = EncodingKey::from_rsa_pem(rsa_priv).expect("rsa key");
        let dec = DecodingKey::from_rsa_pem(rsa_pub).expect("rsa public key");
        let claims = serde_json::json!({ "sub": "alice", "exp": 4_000_000_000u64 });
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &enc).expect("encode");
        let v = jsonwebtoken::Validation::new(Algorithm::RS256);
        let data = jsonwebtoken::decode::<serde_json::Value>(&token, &dec, &v).expect("decode");
        assert_eq!(data.claims["sub"], "alice");
        let tampered = format!("{}x", &token[..token.len() - 1]);
        assert!(jsonwebtoken::decode::<serde_json::Value>(&tampered, &dec, &v).is_err());
    }
}
