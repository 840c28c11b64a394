//! Transparent proxying (README, Transparent proxying) end to end, in network namespaces the tests create: a
//! "pod" namespace where the application, its client and `tracecar run` live behind the
//! redirect rules, and a "peer" namespace across a veth pair standing for the rest of the
//! cluster. The application and its clients (Python's http.server, curl) know nothing of
//! tracecar. Skipped, with a message, where namespaces cannot be created.

mod harness;

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use harness::export::{Collector, mesh_with_backend, zipkin_backend};

const TRACECAR: &str = env!("CARGO_BIN_EXE_tracecar");
/// The uid the application and its clients run as; tracecar runs as root, whose connections
/// the rules leave alone.
const APP_UID: &str = "65534";
const POD: &str = "10.7.0.1";
const PEER: &str = "10.7.0.2";
const POD6: &str = "fd07::1";
const PEER6: &str = "fd07::2";
const VIP: &str = "10.96.0.10";
const VIP6: &str = "fd96::10";

fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"))
}

fn must(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ipv6_available() -> bool {
    Path::new("/proc/sys/net/ipv6").exists()
}

/// Two namespaces joined by a veth pair, deleted (with every process started in them) on drop.
struct Pod {
    pod: String,
    peer: String,
    children: Vec<Child>,
    dir: tempfile::TempDir,
}

impl Pod {
    /// `None` (after saying why) where this process may not create namespaces.
    fn create() -> Option<Pod> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pod = format!("tct-{}-{n}-pod", std::process::id());
        let peer = format!("tct-{}-{n}-peer", std::process::id());
        let created = run(&["ip", "netns", "add", &pod]);
        if !created.status.success() {
            eprintln!(
                "SKIPPED: network namespaces are not allowed here (ip netns add: {})",
                String::from_utf8_lossy(&created.stderr).trim()
            );
            return None;
        }
        if run(&["nft", "--version"]).status.code().is_none() {
            let _ = run(&["ip", "netns", "del", &pod]);
            eprintln!("SKIPPED: the nft tool is not installed (scripts/test installs it)");
            return None;
        }
        let this = Pod {
            pod,
            peer: peer.clone(),
            children: Vec::new(),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        must(&["ip", "netns", "add", &peer]);
        let (p, q) = (this.pod.clone(), this.peer.clone());
        must(&["ip", "-n", &p, "link", "set", "lo", "up"]);
        must(&["ip", "-n", &q, "link", "set", "lo", "up"]);
        must(&[
            "ip", "-n", &p, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns",
            &q,
        ]);
        must(&[
            "ip",
            "-n",
            &p,
            "addr",
            "add",
            &format!("{POD}/24"),
            "dev",
            "eth0",
        ]);
        must(&[
            "ip",
            "-n",
            &q,
            "addr",
            "add",
            &format!("{PEER}/24"),
            "dev",
            "eth0",
        ]);
        must(&["ip", "-n", &p, "link", "set", "eth0", "up"]);
        must(&["ip", "-n", &q, "link", "set", "eth0", "up"]);
        // Service VIPs are routed out of the pod, as a cluster's are; only redirection makes
        // them answer (the peer holds none unless a test gives it one).
        must(&["ip", "-n", &p, "route", "add", "10.96.0.0/16", "via", PEER]);
        if ipv6_available() {
            for (ns, addr) in [(&p, POD6), (&q, PEER6)] {
                must(&[
                    "ip",
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{addr}/64"),
                    "dev",
                    "eth0",
                    "nodad",
                ]);
            }
            must(&[
                "ip",
                "-n",
                &p,
                "-6",
                "route",
                "add",
                "fd96::/64",
                "via",
                PEER6,
            ]);
        }
        Some(this)
    }

    fn exec(&self, ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).args(args);
        c
    }

    /// A long-running process in namespace `ns`, killed on drop.
    fn spawn(&mut self, ns: &str, args: &[&str]) {
        self.spawn_logging(ns, args, Stdio::null());
    }

    fn spawn_logging(&mut self, ns: &str, args: &[&str], stderr: Stdio) {
        let child = self
            .exec(ns, args)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {args:?}: {e}"));
        self.children.push(child);
    }

    /// An HTTP server answering `GET /who` with `name`, on `address:port` in `ns`.
    fn http_server(&mut self, ns: &str, address: &str, port: u16, name: &str) {
        let root = self.dir.path().join(format!("www-{name}-{port}"));
        std::fs::create_dir_all(&root).expect("server root");
        std::fs::write(root.join("who"), name).expect("who file");
        let root = root.to_string_lossy().into_owned();
        let port_text = port.to_string();
        self.spawn(
            ns,
            &[
                "python3",
                "-m",
                "http.server",
                &port_text,
                "--bind",
                address,
                "--directory",
                &root,
            ],
        );
        self.wait_for_port(ns, address, port);
    }

    /// An HTTP server answering every GET with the address of the peer that connected to it.
    fn echo_peer_server(&mut self, ns: &str, address: &str, port: u16) {
        const ECHO: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = self.client_address[0].encode()
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
"#;
        let port_text = port.to_string();
        self.spawn(ns, &["python3", "-c", ECHO, address, &port_text]);
        self.wait_for_port(ns, address, port);
    }

    fn wait_for_port(&self, ns: &str, address: &str, port: u16) {
        let host = if address.contains(':') {
            format!("[{address}]")
        } else {
            address.to_string()
        };
        for _ in 0..500 {
            let ok = self
                .exec(
                    ns,
                    &[
                        "curl",
                        "-s",
                        "-o",
                        "/dev/null",
                        &format!("http://{host}:{port}/"),
                    ],
                )
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("nothing listens on {host}:{port} in {ns}");
    }

    /// `curl` as the application's uid in `ns`: its connections are redirected.
    fn app_get(&self, ns: &str, url: &str) -> String {
        self.app_curl(ns, &[url])
    }

    /// `curl ARGS…` (the url last) as the application's uid in `ns`.
    fn app_curl(&self, ns: &str, args: &[&str]) -> String {
        let url = args.last().copied().unwrap_or_default();
        let mut all = vec![
            "setpriv",
            "--reuid",
            APP_UID,
            "--regid",
            APP_UID,
            "--clear-groups",
            "curl",
            "-sS",
            "--max-time",
            "10",
        ];
        all.extend_from_slice(args);
        let out = self.exec(ns, &all).output().expect("run curl");
        assert!(
            out.status.success(),
            "GET {url} from {ns} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn nft(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "netns", "exec", &self.pod, "nft"];
        all.extend_from_slice(args);
        must(&all)
    }

    fn redirect(&self, args: &[&str]) -> Output {
        let mut all = vec!["ip", "netns", "exec", &self.pod, TRACECAR, "redirect"];
        all.extend_from_slice(args);
        run(&all)
    }

    fn install(&self, extra: &[&str]) {
        let mut args = vec!["install", "--uid", "0"];
        args.extend_from_slice(extra);
        let out = self.redirect(&args);
        assert!(
            out.status.success(),
            "redirect install: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A Zipkin collector listening inside the pod namespace, on its loopback.
    async fn collector(&self) -> Collector {
        let path = PathBuf::from(format!("/run/netns/{}", self.pod));
        // A socket belongs to the namespace of the thread that creates it: a short-lived thread
        // enters the pod's namespace, binds, and hands the socket back.
        let listener = std::thread::spawn(move || -> std::io::Result<StdListener> {
            let ns = std::fs::File::open(&path)?;
            enter_namespace(&ns)?;
            StdListener::bind("127.0.0.1:0")
        })
        .join()
        .expect("namespace thread")
        .expect("bind in the pod namespace");
        listener.set_nonblocking(true).expect("nonblocking");
        Collector::on(tokio::net::TcpListener::from_std(listener).expect("tokio listener"))
    }

    /// Where `tracecar run` writes its log.
    fn tracecar_log(&self) -> PathBuf {
        self.dir.path().join("tracecar.log")
    }

    /// Starts `tracecar run` in the pod namespace, as root, and waits until it is ready.
    fn start_tracecar(&mut self, collector: &Collector, dataplane: &str) {
        let policy = self.dir.path().join("policy.yaml");
        std::fs::write(
            &policy,
            mesh_with_backend(&zipkin_backend(&collector.url(), "")),
        )
        .expect("policy");
        let file = self.dir.path().join("dataplane.yaml");
        std::fs::write(&file, dataplane).expect("dataplane");
        let (file, policy) = (
            file.to_string_lossy().into_owned(),
            policy.to_string_lossy().into_owned(),
        );
        let pod = self.pod.clone();
        let log = std::fs::File::create(self.tracecar_log()).expect("tracecar log");
        self.spawn_logging(
            &pod,
            &[
                TRACECAR,
                "run",
                "--dataplane",
                &file,
                "--policy",
                &policy,
                "--admin",
                "127.0.0.1:9901",
            ],
            Stdio::from(log),
        );
        for _ in 0..500 {
            let ready = self
                .exec(
                    &pod,
                    &[
                        "curl",
                        "-sf",
                        "-o",
                        "/dev/null",
                        "http://127.0.0.1:9901/ready",
                    ],
                )
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("tracecar did not become ready in {pod}");
    }
}

fn enter_namespace(ns: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: setns takes a descriptor we own, open for the call's duration, and changes only
    // the calling thread's network namespace (this thread is ours and ends right after).
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = run(&["ip", "netns", "del", &self.pod]);
        let _ = run(&["ip", "netns", "del", &self.peer]);
    }
}

/// A Dataplane with transparent proxying: the application on 8080 in the pod, and a
/// "backend" service at a VIP.
fn dataplane(outbounds: &str) -> String {
    format!(
        "type: Dataplane\nmesh: default\nname: web-1\nnetworking:\n  address: {POD}\n  transparentProxying:\n    redirectPortInbound: 15006\n    redirectPortOutbound: 15001\n  inbound:\n    - port: 8080\n      tags: {{kuma.io/service: web, kuma.io/protocol: http}}\n  outbound:\n{outbounds}"
    )
}

fn outbound(address: &str, port: u16, endpoint: &str) -> String {
    format!(
        "    - address: \"{address}\"\n      port: {port}\n      tags: {{kuma.io/service: backend, kuma.io/protocol: http}}\n      endpoints: [\"{endpoint}\"]\n"
    )
}

fn tag<'a>(span: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    span["tags"][key].as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_calling_a_service_vip_is_traced() {
    let Some(mut pod) = Pod::create() else { return };
    let peer = pod.peer.clone();
    pod.http_server(&peer, PEER, 8081, "backend");
    let collector = pod.collector().await;
    pod.start_tracecar(
        &collector,
        &dataplane(&outbound(VIP, 80, &format!("{PEER}:8081"))),
    );
    pod.install(&[]);

    let body = pod.app_get(&pod.pod, &format!("http://{VIP}/who"));

    assert_eq!(body, "backend");
    let spans = collector.wait_for_json(1).await;
    assert_eq!(spans[0]["kind"], "CLIENT", "{spans:?}");
    assert_eq!(
        tag(&spans[0], "http.url"),
        Some(&*format!("http://{VIP}/who")),
        "{spans:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_call_to_the_applications_own_port_is_traced() {
    let Some(mut pod) = Pod::create() else { return };
    let own = pod.pod.clone();
    pod.http_server(&own, "0.0.0.0", 8080, "web");
    let collector = pod.collector().await;
    pod.start_tracecar(&collector, &dataplane("    []\n"));
    pod.install(&[]);

    let body = pod.app_get(&pod.peer, &format!("http://{POD}:8080/who"));

    assert_eq!(body, "web");
    let spans = collector.wait_for_json(1).await;
    assert_eq!(spans[0]["kind"], "SERVER", "{spans:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_destinations_pass_through_untraced() {
    let Some(mut pod) = Pod::create() else { return };
    let peer = pod.peer.clone();
    pod.http_server(&peer, PEER, 9000, "elsewhere");
    pod.http_server(&peer, PEER, 8081, "backend");
    let collector = pod.collector().await;
    pod.start_tracecar(
        &collector,
        &dataplane(&outbound(VIP, 80, &format!("{PEER}:8081"))),
    );
    pod.install(&[]);

    let body = pod.app_get(&pod.pod, &format!("http://{PEER}:9000/who"));
    // A traced call after it: spans leave in order, so had the first been traced its span
    // would be among those that arrive with this one.
    pod.app_get(&pod.pod, &format!("http://{VIP}/who"));

    assert_eq!(body, "elsewhere");
    let spans = collector.wait_for_json(1).await;
    assert_eq!(spans.len(), 1, "only the VIP call is traced: {spans:?}");
    assert_eq!(
        tag(&spans[0], "http.url"),
        Some(&*format!("http://{VIP}/who"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excluded_outbound_ports_bypass_tracecar() {
    let Some(mut pod) = Pod::create() else { return };
    let peer = pod.peer.clone();
    // The peer answers on the VIP itself, so a connection that is not redirected gets there.
    must(&[
        "ip",
        "-n",
        &peer,
        "addr",
        "add",
        &format!("{VIP}/32"),
        "dev",
        "lo",
    ]);
    pod.http_server(&peer, VIP, 8443, "direct");
    pod.http_server(&peer, PEER, 8081, "through-tracecar");
    let collector = pod.collector().await;
    pod.start_tracecar(
        &collector,
        &dataplane(&outbound(VIP, 8443, &format!("{PEER}:8081"))),
    );
    pod.install(&["--exclude-outbound-ports", "8443,9901"]);

    let body = pod.app_get(&pod.pod, &format!("http://{VIP}:8443/who"));

    assert_eq!(body, "direct");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_call_to_a_service_vip_is_detected_and_traced() {
    let Some(mut pod) = Pod::create() else { return };
    let peer = pod.peer.clone();
    pod.http_server(&peer, PEER, 8081, "backend");
    let collector = pod.collector().await;
    pod.start_tracecar(
        &collector,
        &dataplane(&outbound(VIP, 80, &format!("{PEER}:8081"))),
    );
    pod.install(&[]);

    let body = pod.app_curl(
        &pod.pod,
        &["--http2-prior-knowledge", &format!("http://{VIP}/who")],
    );

    assert_eq!(body, "backend");
    let spans = collector.wait_for_json(1).await;
    assert_eq!(spans[0]["kind"], "CLIENT", "{spans:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excluded_inbound_ports_reach_the_application_directly() {
    let Some(mut pod) = Pod::create() else { return };
    let own = pod.pod.clone();
    // The application answers with the address that connected to it: the client's own when
    // the connection bypassed tracecar, the pod's when tracecar forwarded it.
    pod.echo_peer_server(&own, "0.0.0.0", 8080);
    let collector = pod.collector().await;
    pod.start_tracecar(&collector, &dataplane("    []\n"));
    pod.install(&["--exclude-inbound-ports", "8080,9901"]);

    let seen = pod.app_get(&pod.peer, &format!("http://{POD}:8080/"));

    assert_eq!(seen, PEER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirected_inbound_calls_reach_the_application_through_tracecar() {
    let Some(mut pod) = Pod::create() else { return };
    let own = pod.pod.clone();
    pod.echo_peer_server(&own, "0.0.0.0", 8080);
    let collector = pod.collector().await;
    pod.start_tracecar(&collector, &dataplane("    []\n"));
    pod.install(&[]);

    let seen = pod.app_get(&pod.peer, &format!("http://{POD}:8080/"));

    assert_eq!(
        seen, POD,
        "tracecar connects to the application from the pod's address"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_service_vip_is_traced() {
    if !ipv6_available() {
        eprintln!("SKIPPED: this kernel has no IPv6");
        return;
    }
    let Some(mut pod) = Pod::create() else { return };
    let peer = pod.peer.clone();
    pod.http_server(&peer, PEER6, 8081, "backend6");
    let collector = pod.collector().await;
    pod.start_tracecar(
        &collector,
        &dataplane(&outbound(VIP6, 80, &format!("[{PEER6}]:8081"))),
    );
    pod.install(&[]);

    let body = pod.app_get(&pod.pod, &format!("http://[{VIP6}]/who"));

    assert_eq!(body, "backend6");
    let spans = collector.wait_for_json(1).await;
    assert_eq!(spans[0]["kind"], "CLIENT", "{spans:?}");
}

#[test]
fn installing_twice_is_installing_once() {
    let Some(pod) = Pod::create() else { return };
    pod.install(&[]);
    let once = pod.nft(&["list", "ruleset"]);
    pod.install(&[]);

    assert_eq!(pod.nft(&["list", "ruleset"]), once);
}

#[test]
fn uninstalling_restores_the_ruleset_exactly() {
    let Some(pod) = Pod::create() else { return };
    // Someone else's rules, which tracecar must leave as they were.
    pod.nft(&["add", "table", "ip", "other"]);
    pod.nft(&[
        "add",
        "chain",
        "ip",
        "other",
        "input",
        "{ type filter hook input priority 0; policy accept; }",
    ]);
    pod.nft(&[
        "add", "rule", "ip", "other", "input", "tcp", "dport", "22", "accept",
    ]);
    let before = pod.nft(&["list", "ruleset"]);
    pod.install(&[]);
    assert_ne!(
        pod.nft(&["list", "ruleset"]),
        before,
        "install changed something"
    );

    let out = pod.redirect(&["uninstall"]);

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(pod.nft(&["list", "ruleset"]), before);
}

#[test]
fn uninstalling_when_nothing_is_installed_succeeds() {
    let Some(pod) = Pod::create() else { return };

    let out = pod.redirect(&["uninstall"]);

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_dry_run_prints_the_rules_and_installs_nothing() {
    let Some(pod) = Pod::create() else { return };
    let before = pod.nft(&["list", "ruleset"]);

    let out = pod.redirect(&["install", "--uid", "5678", "--dry-run"]);

    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("meta skuid 5678 return"), "{printed}");
    assert!(printed.contains("redirect to :15001"), "{printed}");
    assert_eq!(pod.nft(&["list", "ruleset"]), before);
}

#[test]
fn a_missing_nft_tool_is_named() {
    let out = Command::new(TRACECAR)
        .args(["redirect", "install", "--uid", "0"])
        .env("PATH", "/nonexistent")
        .output()
        .expect("run tracecar");

    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("the nft tool is not installed"),
        "{stderr}"
    );
}

#[test]
fn an_unknown_user_is_invalid_input() {
    let out = Command::new(TRACECAR)
        .args([
            "redirect",
            "install",
            "--uid",
            "no-such-user-here",
            "--dry-run",
        ])
        .output()
        .expect("run tracecar");

    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "--uid no-such-user-here: no such user"
    );
}

#[test]
fn without_the_capability_the_error_names_it() {
    let Some(pod) = Pod::create() else { return };
    let out = Command::new("ip")
        .args([
            "netns", "exec", &pod.pod, "setpriv", "--reuid", APP_UID, TRACECAR,
        ])
        .args(["redirect", "install", "--uid", "0"])
        .output()
        .expect("run tracecar");

    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("NET_ADMIN"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_that_miss_tracecars_uid_close_the_loop_instead_of_feeding_it() {
    let Some(mut pod) = Pod::create() else { return };
    let peer = pod.peer.clone();
    pod.http_server(&peer, PEER, 9000, "elsewhere");
    let collector = pod.collector().await;
    pod.start_tracecar(
        &collector,
        &dataplane(&outbound(VIP, 80, &format!("{PEER}:8081"))),
    );
    // tracecar runs as root, but the rules exclude another uid: its passthrough connection
    // is redirected back to it.
    let out = pod.redirect(&["install", "--uid", "4242"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let status = pod
        .exec(
            &pod.pod,
            &[
                "setpriv",
                "--reuid",
                APP_UID,
                "--regid",
                APP_UID,
                "--clear-groups",
                "curl",
                "-s",
                "--max-time",
                "10",
                &format!("http://{PEER}:9000/who"),
            ],
        )
        .status()
        .expect("run curl");

    assert_eq!(status.code(), Some(52), "closed without a reply");
    let log = std::fs::read_to_string(pod.tracecar_log()).expect("tracecar log");
    assert!(
        log.contains("tracecar's own connection was redirected back to it"),
        "{log}"
    );
}
