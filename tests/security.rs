//! Security defaults (issue 8): the admin server is bound to loopback unless told otherwise, no
//! header value or secret reaches the log at the default level, and TLS — inbound, outbound
//! and to collectors — is never below 1.2 (rustls' safe defaults).

mod harness;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use harness::grpc::{TestPki, start_echo_server, start_proxy};
use harness::{Sidecar, SidecarFiles, Upstream, down_collector_url, free_port, metric};

// ---------------------------------------------------------------------------------------------
// The admin server binds to loopback by default.

#[test]
fn the_admin_address_defaults_to_loopback_port_9901() {
    // Read from the parser itself, so the check needs neither port 9901 nor a clean
    // environment (TRACECAR_ADMIN would override the default in a parse).
    use clap::CommandFactory;
    let cli = tracecar::cli::Cli::command();
    let run = cli.find_subcommand("run").expect("a run command");
    let admin = run
        .get_arguments()
        .find(|a| a.get_id() == "admin")
        .expect("an --admin option");
    let defaults: Vec<String> = admin
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    assert_eq!(defaults, ["127.0.0.1:9901"]);
    let address: SocketAddr = defaults[0].parse().expect("an address");
    assert!(address.ip().is_loopback());
    assert_eq!(
        admin.get_env().and_then(|e| e.to_str()),
        Some(tracecar::cli::env::ADMIN)
    );
}

/// The listening TCP sockets of process `pid`, as (address, port), IPv4 and IPv6, read from
/// `/proc`: its socket inodes from `fd/`, their states from its network namespace's tables.
fn listening_sockets(pid: u32) -> Vec<(String, u16)> {
    let mut inodes = Vec::new();
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in fds.filter_map(Result::ok) {
            let target = std::fs::read_link(fd.path()).unwrap_or_default();
            let target = target.to_string_lossy();
            if let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'))
            {
                inodes.push(inode.to_string());
            }
        }
    }
    let mut listening = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            // 0A: TCP_LISTEN.
            if *state != "0A" || !inodes.iter().any(|i| i == inode) {
                continue;
            }
            let Some((address, port)) = local.split_once(':') else {
                continue;
            };
            let port = u16::from_str_radix(port, 16).unwrap_or(0);
            listening.push((proc_address(address), port));
        }
    }
    listening
}

/// `/proc/net/tcp*`'s hex address (host byte order per 32-bit word) as text.
fn proc_address(hex: &str) -> String {
    let words: Vec<u32> = (0..hex.len() / 8)
        .filter_map(|i| u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok())
        .collect();
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    match bytes.len() {
        4 => std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string(),
        16 => {
            let octets: [u8; 16] = bytes.try_into().unwrap_or([0; 16]);
            std::net::Ipv6Addr::from(octets).to_string()
        }
        _ => hex.to_string(),
    }
}

/// Whether this process may give a child a network namespace of its own.
fn can_unshare_network() -> bool {
    std::process::Command::new("unshare")
        .args(["--net", "true"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Kills the child it holds when dropped, so a failed assertion leaves nothing running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn run_without_admin_listens_on_loopback_only() {
    // `run` with no --admin and no TRACECAR_ADMIN. In a network namespace of its own (when
    // allowed) port 9901 is free whatever else runs on this machine, and nothing there is
    // reachable from outside anyway: the check reads the sockets from /proc, not over the
    // network.
    let app = Upstream::start().await;
    let files = SidecarFiles::new(app.address, &[("a", &down_collector_url())], "a");
    let isolated = can_unshare_network();
    if !isolated {
        assert!(
            std::net::TcpListener::bind("127.0.0.1:9901").is_ok(),
            "no network namespace available and port 9901 is taken: cannot start `run` with \
             its default admin address"
        );
    }
    let log_dir = tempfile::tempdir().expect("tempdir");
    let log = log_dir.path().join("tracecar.log");
    let binary = env!("CARGO_BIN_EXE_tracecar");
    let mut command = if isolated {
        let mut c = std::process::Command::new("unshare");
        c.args(["--net", "--", binary]);
        c
    } else {
        std::process::Command::new(binary)
    };
    let child = command
        .arg("run")
        .arg("--dataplane")
        .arg(&files.dataplane)
        .arg("--policy")
        .arg(&files.policy)
        .env_remove(tracecar::cli::env::ADMIN)
        .env_remove(tracecar::cli::env::POLICY)
        .env_remove(tracecar::cli::env::DATAPLANE)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("tracecar starts");
    let mut child = KillOnDrop(child);
    let pid = child.0.id();

    // Ready once both the admin server and the inbound listen.
    let deadline = Instant::now() + Duration::from_secs(15);
    let listening = loop {
        let listening = listening_sockets(pid);
        let ports: Vec<u16> = listening.iter().map(|(_, p)| *p).collect();
        if ports.contains(&9901) && ports.contains(&files.inbound.port()) {
            break listening;
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!(
                "tracecar exited with {status}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "not listening on 9901 within 15 s (sockets: {listening:?}):\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        listening.contains(&("127.0.0.1".to_string(), 9901)),
        "{listening:?}"
    );
    let exposed: Vec<&(String, u16)> = listening
        .iter()
        .filter(|(address, _)| address != "127.0.0.1")
        .collect();
    assert!(exposed.is_empty(), "listening beyond loopback: {exposed:?}");
}

// ---------------------------------------------------------------------------------------------
// No header values or secrets in the log at the default level.

/// Distinctive values that must never be logged. Each is unique to this test.
const AUTHORIZATION: &str = "Bearer authz-secret-7d1e4b9a";
const COOKIE: &str = "session=cookie-secret-52c08f3e";
const API_KEY: &str = "header-secret-a9e3c6d2";
const BAD_B3: &str = "b3-secret-0f6b2e81";
const COLLECTOR_PASSWORD: &str = "collector-password-3b8d5f17";

/// Sends raw HTTP/1.1 request bytes and returns the status line of the answer.
async fn raw_request(address: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn no_header_values_or_collector_password_are_logged_at_the_default_level() {
    // The collector url carries a password in its userinfo; the collector is down, so the
    // export warning, which names the url, is logged.
    let app = Upstream::start().await;
    let port = free_port();
    let url = format!("http://tracecar:{COLLECTOR_PASSWORD}@127.0.0.1:{port}/api/v2/spans");
    let files = SidecarFiles::new(app.address, &[("a", &url)], "a");
    // `info` is the default; set explicitly so an inherited TRACECAR_LOG cannot change it.
    let mut sidecar = Sidecar::start(
        &files.dataplane,
        &files.policy,
        &[(tracecar::cli::env::LOG, "info")],
    )
    .await;

    let host = files.inbound;
    let secrets = format!(
        "Authorization: {AUTHORIZATION}\r\nCookie: {COOKIE}\r\nX-Api-Key: {API_KEY}\r\n\
         Proxy-Authorization: {AUTHORIZATION}\r\nb3: {BAD_B3}\r\n"
    );
    // A request that is proxied and traced, and one the proxy refuses (an invalid header
    // name next to the secrets), each on its own connection.
    let proxied = raw_request(
        host,
        &format!("GET /echo HTTP/1.1\r\nHost: {host}\r\n{secrets}Connection: close\r\n\r\n"),
    )
    .await;
    assert!(proxied.contains(" 200 "), "{proxied}");
    let refused = raw_request(
        host,
        &format!("GET /echo HTTP/1.1\r\nHost: {host}\r\n{secrets}Bad Header: {API_KEY}\r\n\r\n"),
    )
    .await;
    assert!(refused.contains(" 400 "), "{refused}");

    // Wait until the span's export has failed (and been logged), then stop.
    let started = Instant::now();
    loop {
        let failed = metric(
            &sidecar.metrics().await,
            "tracecar_spans_dropped_total",
            &[("reason", "export_failed")],
        )
        .unwrap_or(0.0);
        if failed > 0.0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the export did not fail within 15 s:\n{}",
            sidecar.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sidecar.terminate();
    let status = sidecar.wait(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");

    let (log, stdout) = (sidecar.log(), sidecar.stdout());
    let warning = log
        .lines()
        .find(|l| l.contains("span export failed"))
        .unwrap_or_else(|| panic!("the export failure is logged:\n{log}"));
    assert!(
        warning.contains(&format!("127.0.0.1:{port}")),
        "the warning still says which collector: {warning}"
    );
    for secret in [
        AUTHORIZATION,
        "authz-secret-7d1e4b9a",
        COOKIE,
        "cookie-secret-52c08f3e",
        API_KEY,
        BAD_B3,
        COLLECTOR_PASSWORD,
    ] {
        assert!(
            !log.contains(secret),
            "\"{secret}\" appears in the log:\n{log}"
        );
        assert!(
            !stdout.contains(secret),
            "\"{secret}\" appears on stdout:\n{stdout}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// No TLS below 1.2, in either direction.

const TLS_1_0: u16 = 0x0301;
const TLS_1_1: u16 = 0x0302;
const TLS_1_2: u16 = 0x0303;
const TLS_1_3: u16 = 0x0304;

/// A ClientHello as a pre-TLS 1.3 client sends it: `version` in the hello, no
/// `supported_versions` extension, cipher suites for TLS 1.0–1.2 (CBC and GCM), the elliptic
/// curve extensions, and signature algorithms. Only its version differs between calls, so a
/// refusal of 1.0 and 1.1 next to an answer to 1.2 is about the version alone.
fn legacy_client_hello(version: u16) -> Vec<u8> {
    fn u16_list(values: &[u16]) -> Vec<u8> {
        let mut out = ((values.len() * 2) as u16).to_be_bytes().to_vec();
        for v in values {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out
    }
    fn extension(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut out = kind.to_be_bytes().to_vec();
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
        out
    }
    let mut extensions = Vec::new();
    // supported_groups: x25519, secp256r1, secp384r1.
    extensions.extend(extension(0x000a, &u16_list(&[0x001d, 0x0017, 0x0018])));
    // ec_point_formats: uncompressed.
    extensions.extend(extension(0x000b, &[1, 0]));
    // signature_algorithms: ECDSA and RSA (PKCS#1 and PSS) with SHA-256/384.
    extensions.extend(extension(
        0x000d,
        &u16_list(&[0x0403, 0x0503, 0x0804, 0x0805, 0x0401, 0x0501]),
    ));

    let mut hello = version.to_be_bytes().to_vec();
    hello.extend_from_slice(&[0x42; 32]); // random
    hello.push(0); // no session id
    hello.extend(u16_list(&[
        0xc02b, 0xc02f, 0xc02c, 0xc030, // ECDHE with AES-GCM (TLS 1.2)
        0xc009, 0xc013, 0xc00a, 0xc014, // ECDHE with AES-CBC (TLS 1.0+)
        0x002f, 0x0035, // RSA with AES-CBC
    ]));
    hello.extend_from_slice(&[1, 0]); // compression: null
    hello.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    hello.extend(extensions);

    let mut handshake = vec![1]; // client_hello
    handshake.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend(hello);
    // Record layer: handshake, version 1.0 (what clients put there for compatibility).
    let mut record = vec![0x16];
    record.extend_from_slice(&TLS_1_0.to_be_bytes());
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

/// What the server sent back to a ClientHello: the first record's content type and its first
/// two body bytes, read within 5 s (`None` when it closed without a word).
async fn first_record(address: SocketAddr, client_hello: &[u8]) -> Option<(u8, [u8; 2])> {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(client_hello).await.expect("send hello");
    let mut head = [0u8; 7];
    match tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut head)).await {
        Ok(Ok(_)) => Some((head[0], [head[5], head[6]])),
        Ok(Err(_)) => None,
        Err(_) => panic!("no answer to the ClientHello within 5 s"),
    }
}

/// An inbound terminating TLS (as in tests/proxy_tls.rs) in front of an echo app.
async fn tls_inbound(pki: &TestPki) -> (harness::Proxy, harness::grpc::EchoServer) {
    let app = start_echo_server().await;
    let proxy = start_proxy(&format!(
        "type: Dataplane\nmesh: default\nname: web-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n    - port: {}\n      servicePort: {}\n      tags: {{kuma.io/service: web, kuma.io/protocol: http}}\n      tls: {{certFile: \"{}\", keyFile: \"{}\"}}\n",
        free_port(),
        app.address.port(),
        pki.cert_file.display(),
        pki.key_file.display(),
    ))
    .await;
    (proxy, app)
}

/// TLS alert content type, fatal level, and the `protocol_version` alert (RFC 8446 §6).
const ALERT: u8 = 0x15;
const FATAL: u8 = 2;
const PROTOCOL_VERSION: u8 = 70;

#[tokio::test]
async fn a_tls_1_0_client_hello_is_refused_with_a_protocol_version_alert() {
    let pki = TestPki::new();
    let (proxy, _app) = tls_inbound(&pki).await;
    let answer = first_record(proxy.address(0), &legacy_client_hello(TLS_1_0)).await;
    assert_eq!(answer, Some((ALERT, [FATAL, PROTOCOL_VERSION])));
}

#[tokio::test]
async fn a_tls_1_1_client_hello_is_refused_with_a_protocol_version_alert() {
    let pki = TestPki::new();
    let (proxy, _app) = tls_inbound(&pki).await;
    let answer = first_record(proxy.address(0), &legacy_client_hello(TLS_1_1)).await;
    assert_eq!(answer, Some((ALERT, [FATAL, PROTOCOL_VERSION])));
}

#[tokio::test]
async fn the_same_client_hello_at_tls_1_2_gets_a_server_hello() {
    // The control: the hand-written hello is one the inbound accepts, once it says 1.2.
    let pki = TestPki::new();
    let (proxy, _app) = tls_inbound(&pki).await;
    let answer = first_record(proxy.address(0), &legacy_client_hello(TLS_1_2)).await;
    // A handshake record whose first message is a server_hello (2).
    let Some((0x16, [2, _])) = answer else {
        panic!("expected a ServerHello, got {answer:?}");
    };
}

/// Accepts one connection and returns the protocol versions its ClientHello offers: the
/// `supported_versions` extension when present (TLS 1.3 clients), else the hello's version.
async fn offered_versions(listener: TcpListener) -> Vec<u16> {
    let (mut stream, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .expect("a connection within 5 s")
        .expect("accept");
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).await.expect("record header");
    assert_eq!(header[0], 0x16, "a handshake record first");
    let length = u16::from_be_bytes([header[3], header[4]]) as usize;
    let mut record = vec![0u8; length];
    stream.read_exact(&mut record).await.expect("record");
    parse_offered_versions(&record).expect("a well-formed ClientHello")
}

fn parse_offered_versions(record: &[u8]) -> Option<Vec<u16>> {
    let u16_at = |i: usize| Some(u16::from_be_bytes([*record.get(i)?, *record.get(i + 1)?]));
    if *record.first()? != 1 {
        return None; // not a client_hello
    }
    let legacy_version = u16_at(4)?;
    let mut i = 4 + 2 + 32;
    i += 1 + *record.get(i)? as usize; // session id
    i += 2 + u16_at(i)? as usize; // cipher suites
    i += 1 + *record.get(i)? as usize; // compression methods
    let end = i + 2 + u16_at(i)? as usize;
    i += 2;
    while i + 4 <= end {
        let (kind, len) = (u16_at(i)?, u16_at(i + 2)? as usize);
        if kind == 0x002b {
            let list = record.get(i + 5..i + 5 + *record.get(i + 4)? as usize)?;
            return Some(
                list.chunks(2)
                    .map(|c| u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]))
                    .collect(),
            );
        }
        i += 4 + len;
    }
    Some(vec![legacy_version])
}

#[tokio::test]
async fn the_exporter_offers_only_tls_1_3_and_1_2_to_an_https_collector() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let uri: http::Uri = format!(
        "https://{}/api/v2/spans",
        listener.local_addr().expect("addr")
    )
    .parse()
    .expect("uri");
    let offered = tokio::spawn(offered_versions(listener));
    let payload = tracecar::export::Payload {
        body: bytes::Bytes::from_static(b"[]"),
        spans: 0,
        headers: Vec::new(),
    };
    let client = tracecar::export::client::ExportClient::new();
    // The capturing server closes after the hello: the POST fails, the hello is what counts.
    let _ = client.post(&uri, &payload, Duration::from_secs(5)).await;
    assert_eq!(offered.await.expect("capture"), [TLS_1_3, TLS_1_2]);
}

#[tokio::test]
async fn a_tls_outbound_offers_only_tls_1_3_and_1_2() {
    // The rustls config an outbound with `tls: {caFile, serverName}` originates with.
    let pki = TestPki::new();
    let config = tracecar::proxy::tls::client_config(&pki.ca_file, Some(b"h2")).expect("config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr");
    let offered = tokio::spawn(offered_versions(listener));
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(address).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let _ = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp)).await;
    assert_eq!(offered.await.expect("capture"), [TLS_1_3, TLS_1_2]);
}

#[test]
fn a_collector_url_is_logged_with_its_userinfo_redacted() {
    use tracecar::policy::effective::redact_userinfo;
    assert_eq!(
        redact_userinfo("https://user:secret@collector:9411/api/v2/spans"),
        "https://***@collector:9411/api/v2/spans"
    );
    // A bare token as the user name is a secret too.
    assert_eq!(
        redact_userinfo("http://token@127.0.0.1:9411"),
        "http://***@127.0.0.1:9411"
    );
    // An `@` after the authority is not userinfo.
    assert_eq!(
        redact_userinfo("http://127.0.0.1:9411/a@b?c=d@e"),
        "http://127.0.0.1:9411/a@b?c=d@e"
    );
    assert_eq!(
        redact_userinfo("http://127.0.0.1:9411/api/v2/spans"),
        "http://127.0.0.1:9411/api/v2/spans"
    );
}
