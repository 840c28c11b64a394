//! nginx, twice: the upstream application (a fixed 1 KiB body over keep-alive HTTP/1.1 and
//! h2c) and the reference reverse proxy (1 worker, HTTP/1.1 upstream keep-alive). Each runs
//! from its own temporary prefix and config.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::procfs::Managed;

/// The size of every HTTP response body.
pub const BODY_LEN: usize = 1024;
/// The path the load tools request.
pub const PATH: &str = "/1k";

pub struct Nginx {
    pub process: Managed,
    _dir: tempfile::TempDir,
}

impl Nginx {
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// 1 KiB of text that needs no quoting inside an nginx string.
fn body() -> String {
    let alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
    alphabet.chars().cycle().take(BODY_LEN).collect()
}

/// The upstream: HTTP/1.1 on `h1`, h2c (prior knowledge) on `h2c`, both answering `PATH`
/// with `BODY_LEN` bytes from memory.
pub fn upstream(h1: u16, h2c: u16) -> anyhow::Result<Nginx> {
    let server = format!(
        "server {{\n\
         listen 127.0.0.1:{h1} backlog=4096;\n\
         listen 127.0.0.1:{h2c} http2 backlog=4096;\n\
         location = {PATH} {{ default_type text/plain; return 200 \"{}\"; }}\n\
         location / {{ return 404; }}\n\
         }}\n",
        body()
    );
    start("upstream", &server, &[h1, h2c])
}

/// The reverse proxy: HTTP/1.1 on `h1` and h2c on `h2c`, both forwarding over HTTP/1.1 with a
/// keep-alive pool to `app` (nginx cannot speak HTTP/2 to an HTTP upstream). With `b3`, it
/// also writes the headers tracecar adds to a forwarded request: a request id, B3 ids (the
/// trace id is `$request_id`, 32 hex digits; the span id its first 16) with sampling on, and
/// `x-forwarded-proto`.
pub fn reverse_proxy(h1: u16, h2c: u16, app: SocketAddr, b3: bool) -> anyhow::Result<Nginx> {
    let (map, headers) = if b3 {
        (
            "map $request_id $b3_span_id {\n\
             \"~^(?<first>.{16})\" $first;\n\
             }\n",
            "proxy_set_header x-request-id $request_id;\n\
             proxy_set_header x-b3-traceid $request_id;\n\
             proxy_set_header x-b3-spanid $b3_span_id;\n\
             proxy_set_header x-b3-sampled 1;\n\
             proxy_set_header x-forwarded-proto $scheme;\n",
        )
    } else {
        ("", "")
    };
    let server = format!(
        "{map}upstream app {{\n\
         server {app};\n\
         keepalive 64;\n\
         keepalive_requests 1000000;\n\
         keepalive_timeout 300s;\n\
         }}\n\
         server {{\n\
         listen 127.0.0.1:{h1} backlog=4096;\n\
         listen 127.0.0.1:{h2c} http2 backlog=4096;\n\
         location / {{\n\
         proxy_pass http://app;\n\
         proxy_http_version 1.1;\n\
         proxy_set_header Connection \"\";\n\
         {headers}\
         }}\n\
         }}\n"
    );
    start("nginx-proxy", &server, &[h1, h2c])
}

fn start(name: &str, server: &str, ports: &[u16]) -> anyhow::Result<Nginx> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("tracecar-bench-{name}-"))
        .tempdir()
        .context("temporary nginx prefix")?;
    let prefix = dir.path();
    std::fs::create_dir_all(prefix.join("tmp"))?;
    let conf = config(prefix, server);
    let conf_file = prefix.join("nginx.conf");
    std::fs::write(&conf_file, conf)?;
    let error_log = prefix.join("error.log");
    // The upstream runs beside the load tools; the reverse proxy is a proxy under test.
    let mut nginx = if name == "nginx-proxy" {
        crate::target::command("nginx")
    } else {
        Command::new("nginx")
    };
    let child = nginx
        .arg("-p")
        .arg(prefix)
        .arg("-c")
        .arg(&conf_file)
        .arg("-e")
        .arg(&error_log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start nginx (apt-get install nginx)")?;
    let mut process = Managed::new(name, child);
    let deadline = Instant::now() + Duration::from_secs(10);
    for port in ports {
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok() {
                break;
            }
            if process.exited().is_some() || Instant::now() > deadline {
                let log = std::fs::read_to_string(&error_log).unwrap_or_default();
                bail!("nginx ({name}) did not listen on port {port}:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(Nginx { process, _dir: dir })
}

/// One worker and no master (`master_process off`), so that the spawned process is the one
/// doing the work and /proc/<pid> measures exactly it.
fn config(prefix: &Path, server: &str) -> String {
    let p = prefix.display();
    format!(
        "worker_processes 1;\n\
         master_process off;\n\
         daemon off;\n\
         pid {p}/nginx.pid;\n\
         error_log {p}/error.log warn;\n\
         worker_rlimit_nofile 65536;\n\
         events {{ worker_connections 16384; }}\n\
         http {{\n\
         access_log off;\n\
         client_body_temp_path {p}/tmp/body;\n\
         proxy_temp_path {p}/tmp/proxy;\n\
         fastcgi_temp_path {p}/tmp/fastcgi;\n\
         uwsgi_temp_path {p}/tmp/uwsgi;\n\
         scgi_temp_path {p}/tmp/scgi;\n\
         keepalive_timeout 300s;\n\
         keepalive_requests 1000000;\n\
         {server}\
         }}\n"
    )
}
