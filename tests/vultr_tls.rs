//! `--vultr-ca-file`: the Vultr API behind TLS signed by a private CA (a corporate
//! TLS-inspecting proxy). Without the bundle the operator refuses the certificate and
//! sends nothing; with it, or with the CA in the system trust store (`SSL_CERT_FILE`, as
//! the image sets it), it attaches. A file holding no certificate stops it at start.

use vio_harness::{e2e, support};

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use e2e::{API_KEY, DNS_ADMIN, Operator, run_ok};
use kube::api::Api;
use support::{ControlPlane, TestNamespace, wait_for};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use vultr_iam_operator::crd::{PolicyAttachment, READY};

/// A CA and a server certificate for 127.0.0.1 signed by it, with openssl.
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| run_ok(Command::new("openssl").args(args).current_dir(dir));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=vio-test-corporate-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write the extensions");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "server.ext",
        "-out",
        "server.crt",
    ]);
}

/// Terminates TLS on a free 127.0.0.1 port and forwards the plain bytes to `upstream`.
async fn tls_front(dir: &Path, upstream: std::net::SocketAddr) -> String {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.crt"))
        .expect("read server.crt")
        .collect::<Result<_, _>>()
        .expect("PEM certificates");
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("server.key");
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server TLS config");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A refused handshake (the operator without the CA) just ends here.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Ok(mut plain) = TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                }
            });
        }
    });
    format!("https://127.0.0.1:{}", addr.port())
}

/// One try: a namespace `tls-<name>`, an operator for it that reaches Vultr at `url`
/// with these flags and variables, and the PolicyAttachment `name` (dns-admin for
/// tls@example.com).
struct Trial {
    operator: Operator,
    api: Api<PolicyAttachment>,
    _ns: TestNamespace,
}

async fn trial(url: &str, name: &str, extra: &[&str], vars: &[(&str, &str)]) -> Trial {
    let cp = ControlPlane::shared();
    e2e::install_crd(cp);
    let client = cp.client().await;
    let ns = TestNamespace::new(&client, &format!("tls-{name}")).await;
    let api = Api::namespaced(client, &ns.name);
    let operator = Operator::start_with_env(cp, url, API_KEY, &ns.name, extra, vars);
    let spec = e2e::spec_names("user", "dns-admin", "tls@example.com");
    e2e::create(&api, name, spec).await;
    Trial {
        operator,
        api,
        _ns: ns,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vultr_ca_file_is_trusted_and_needed() {
    let certs = tempfile::tempdir().expect("temp dir");
    make_certificates(certs.path());
    let ca = certs.path().join("ca.crt").display().to_string();
    let sim = e2e::demo_sim().await;
    let user = sim.add_user("tls@example.com");
    let url = tls_front(certs.path(), sim.addr()).await;

    // Without the bundle: the certificate is refused, nothing reaches Vultr.
    let mut untrusted = trial(&url, "untrusted", &[], &[]).await;
    wait_for(
        "Ready=False on the untrusted certificate",
        e2e::WAIT,
        || async {
            let obj = untrusted.api.get_opt("untrusted").await.ok()??;
            let c = obj.status.as_ref()?.condition(READY)?;
            (c.status == "False").then_some(())
        },
    )
    .await;
    assert!(
        sim.journal().is_empty(),
        "a request got through: {:?}",
        sim.journal()
    );
    let logs = untrusted.operator.logs();
    assert!(
        logs.contains("certificate") || logs.contains("UnknownIssuer"),
        "{logs}"
    );
    untrusted.operator.kill();

    // With it: attached through TLS.
    let trusted = trial(&url, "trusted", &["--vultr-ca-file", &ca], &[]).await;
    e2e::wait_condition(&trusted.api, "trusted", READY, "True", "Attached").await;
    assert!(sim.is_user_attached(DNS_ADMIN, &user), "no grant in Vultr");
    drop(trusted);

    // Or from the system's trust store, as the image sets it (SSL_CERT_FILE): the client
    // verifies with the platform verifier, not with built-in roots only.
    sim.detach_user(DNS_ADMIN, &user);
    let system = trial(&url, "system", &[], &[("SSL_CERT_FILE", &ca)]).await;
    e2e::wait_condition(&system.api, "system", READY, "True", "Attached").await;
    assert!(sim.is_user_attached(DNS_ADMIN, &user), "no grant in Vultr");
}

#[test]
fn a_ca_file_without_a_certificate_stops_the_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let not_pem = dir.path().join("ca.crt");
    std::fs::write(&not_pem, "not a certificate\n").expect("write");
    for (file, expected) in [
        (not_pem.display().to_string(), "holds no PEM certificate"),
        (
            "/nonexistent/ca.crt".to_owned(),
            "cannot read the Vultr CA file",
        ),
    ] {
        let out = Command::new(support::operator_binary())
            .args(["run", "--vultr-ca-file", &file])
            .env("VULTR_API_KEY", API_KEY)
            .env("KUBECONFIG", "/nonexistent")
            .output()
            .expect("run the operator");
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{text}");
        assert!(text.contains(expected), "{file}: {text}");
    }
}
