//! MeshTrace in the data path, end to end with real proxies on loopback: the merged tags on
//! every span, the sampling knobs measured over many requests (decisions are deterministic
//! from the request id, so the bounds never flake), and a chain of two sidecars that agrees on
//! every decision.

mod harness;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use tokio::net::TcpStream;

use harness::{Collected, Upstream, inbound_yaml, outbound_yaml, proxy_with_observer};
use tracecar::policy::PolicySet;
use tracecar::policy::load::parse_str;
use tracecar::trace::{TraceConfig, TracedBackend, Tracer};

const DATAPLANE: &str = "---\ntype: Dataplane\nname: web-1\nmesh: default\nnetworking:\n  address: 127.0.0.1\n  inbound:\n    - port: 15000\n      tags: {kuma.io/service: web, kuma.io/protocol: http, kuma.io/zone: east}\n";

/// The tracer `run` would build for `policy` (MeshTrace documents), spans to `sink`.
fn tracer(policy: &str, sink: &Arc<Collected>) -> Arc<Tracer> {
    let (resources, diagnostics) = parse_str(Path::new("p.yaml"), &format!("{policy}{DATAPLANE}"));
    assert!(diagnostics.iter().all(|d| !d.is_error()), "{diagnostics:?}");
    let dp = resources
        .iter()
        .find_map(|r| match r {
            tracecar::policy::Resource::Dataplane(d) => Some(d.clone()),
            _ => None,
        })
        .expect("dataplane");
    let effective = PolicySet::from_resources(resources).effective(&dp, 1);
    let backend = effective.backend.as_ref().expect("a backend applies");
    let applied = effective.mesh_trace.as_ref().expect("MeshTrace applies");
    Arc::new(Tracer::new(
        "default.web-1",
        TraceConfig {
            backend: Some(TracedBackend {
                name: Arc::from(backend.name.as_str()),
                basis_points: tracecar::trace::sampler::basis_points(backend.sampling),
                shared_span_context: true,
                trace_id_128bit: false,
                propagation: tracecar::trace::Format::B3,
                sink: sink.clone(),
                meshtrace: Some(tracecar::app::meshtrace_settings(applied)),
            }),
        },
    ))
}

fn policy(default: &str) -> String {
    format!(
        "---\ntype: MeshTrace\nname: base\nmesh: default\nspec:\n  default:\n    backends: [{{type: Zipkin, zipkin: {{url: 'http://127.0.0.1:9411/api/v2/spans'}}}}]\n{default}"
    )
}

type Client = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: std::net::SocketAddr) -> Client {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    sender
}

/// One request; whether the application saw it sampled (`x-b3-sampled: 1`).
async fn sampled(client: &mut Client, headers: &[(&str, String)]) -> bool {
    let mut request = Request::get("/echo").header("host", "web.mesh");
    for (k, v) in headers {
        request = request.header(*k, v.as_str());
    }
    let response = client
        .send_request(request.body(Full::new(Bytes::new())).expect("request"))
        .await
        .expect("response");
    let seen = response
        .headers()
        .get("x-seen-x-b3-sampled")
        .map(|v| v.as_bytes() == b"1");
    response.into_body().collect().await.expect("body");
    seen.expect("the proxy always injects x-b3-sampled")
}

const N: usize = 400;

/// How many of `N` requests with distinct request ids are sampled under `default`.
async fn count(default: &str, client_trace_id: bool) -> usize {
    let app = Upstream::start().await;
    let sink = Arc::new(Collected::default());
    let proxy = proxy_with_observer(
        &inbound_yaml(app.address, "http"),
        tracer(&policy(default), &sink),
    )
    .await;
    let mut client = connect(proxy.address(0)).await;
    let mut hits = 0;
    for i in 0..N {
        let mut headers = vec![("x-request-id", format!("req-{i}-{}", i * 7919))];
        if client_trace_id {
            headers.push(("x-client-trace-id", format!("client-{i}")));
        }
        hits += usize::from(sampled(&mut client, &headers).await);
    }
    hits
}

/// Within ±4 standard deviations of a binomial(N, p).
fn assert_binomial(hits: usize, p: f64) {
    let mean = N as f64 * p;
    let bound = 4.0 * (N as f64 * p * (1.0 - p)).sqrt();
    assert!(
        (hits as f64 - mean).abs() <= bound,
        "{hits} of {N} sampled; expected {mean} ± {bound}"
    );
}

#[tokio::test]
async fn random_sampling_samples_its_share() {
    assert_binomial(count("    sampling: {random: 30}\n", false).await, 0.30);
}

#[tokio::test]
async fn a_decimal_string_sampling_is_honoured() {
    assert_binomial(
        count("    sampling: {random: \"60.1\"}\n", false).await,
        0.601,
    );
}

#[tokio::test]
async fn overall_caps_random_sampling() {
    // Envoy draws both from the same request-id value: the smaller wins.
    assert_binomial(
        count("    sampling: {overall: 20, random: 60}\n", false).await,
        0.20,
    );
}

#[tokio::test]
async fn client_sampling_forces_requests_with_x_client_trace_id() {
    // Forced with 50 %, else random 10 %: 1 - 0.5 × 0.9.
    assert_binomial(
        count("    sampling: {client: 50, random: 10}\n", true).await,
        0.55,
    );
}

#[tokio::test]
async fn client_sampling_does_not_apply_without_x_client_trace_id() {
    assert_binomial(
        count("    sampling: {client: 100, random: 10}\n", false).await,
        0.10,
    );
}

#[tokio::test]
async fn overall_caps_client_forced_requests() {
    assert_binomial(
        count(
            "    sampling: {client: 100, random: 0, overall: 25}\n",
            true,
        )
        .await,
        0.25,
    );
}

#[tokio::test]
async fn an_incoming_sampling_state_still_wins_over_the_knobs() {
    let app = Upstream::start().await;
    let sink = Arc::new(Collected::default());
    let proxy = proxy_with_observer(
        &inbound_yaml(app.address, "http"),
        tracer(&policy("    sampling: {overall: 0}\n"), &sink),
    )
    .await;
    let mut client = connect(proxy.address(0)).await;
    let forced = sampled(&mut client, &[("x-b3-sampled", "1".to_string())]).await;
    assert!(forced);
}

#[tokio::test]
async fn spans_carry_the_merged_tags_then_the_automatic_ones() {
    let base = "    tags:\n      - {name: team, literal: core}\n      - {name: env, header: {name: x-env, default: prod}}\n      - {name: version, header: {name: x-version}}\n";
    let overriding = "---\ntype: MeshTrace\nname: web\nmesh: default\nspec:\n  targetRef: {kind: MeshService, name: web}\n  default:\n    tags:\n      - {name: team, literal: web-team}\n      - {name: env, header: {name: x-env, default: prod}}\n      - {name: version, header: {name: x-version}}\n";
    let app = Upstream::start().await;
    let sink = Arc::new(Collected::default());
    let proxy = proxy_with_observer(
        &inbound_yaml(app.address, "http"),
        tracer(&format!("{}{overriding}", policy(base)), &sink),
    )
    .await;
    let mut client = connect(proxy.address(0)).await;
    sampled(&mut client, &[("x-version", "v2".to_string())]).await;
    sampled(&mut client, &[("x-env", "staging".to_string())]).await;
    let spans = sink.wait_for(2).await;
    let tags = |i: usize| {
        ["team", "env", "version", "kuma.mesh", "kuma.zone"]
            .map(|k| spans[i].tag(k).map(str::to_string))
    };
    let some = |s: &str| Some(s.to_string());
    assert_eq!(
        tags(0),
        [
            some("web-team"),
            some("prod"),
            some("v2"),
            some("default"),
            some("east")
        ]
    );
    assert_eq!(
        tags(1),
        [
            some("web-team"),
            some("staging"),
            None,
            some("default"),
            some("east")
        ]
    );
}

#[tokio::test]
async fn a_chain_of_two_sidecars_agrees_on_every_decision_and_both_spans_carry_the_tags() {
    let default = "    sampling: {client: 40, random: 35, overall: 90}\n    tags: [{name: team, literal: core}]\n";
    let app = Upstream::start().await;
    let server_spans = Arc::new(Collected::default());
    let client_spans = Arc::new(Collected::default());
    let b = proxy_with_observer(
        &inbound_yaml(app.address, "http"),
        tracer(&policy(default), &server_spans),
    )
    .await;
    let a = proxy_with_observer(
        &outbound_yaml(&[b.address(0).to_string()], "http"),
        tracer(&policy(default), &client_spans),
    )
    .await;
    let mut client = connect(a.address(0)).await;
    let mut hits = 0;
    for i in 0..N {
        let mut headers = vec![("x-request-id", format!("chain-{i}"))];
        if i % 2 == 0 {
            headers.push(("x-client-trace-id", format!("c{i}")));
        }
        hits += usize::from(sampled(&mut client, &headers).await);
    }
    assert!(
        hits > 0 && hits < N,
        "the knobs sample some, not all: {hits}"
    );
    let a_spans = client_spans.wait_for(hits).await;
    let b_spans = server_spans.wait_for(hits).await;
    let ids = |spans: &[tracecar::trace::Span]| -> BTreeSet<String> {
        spans
            .iter()
            .map(|s| s.trace_id.to_hex().as_str().to_string())
            .collect()
    };
    assert_eq!(a_spans.len(), hits);
    assert_eq!(b_spans.len(), hits);
    assert_eq!(ids(&a_spans), ids(&b_spans), "the same traces on both hops");
    assert!(
        a_spans
            .iter()
            .chain(&b_spans)
            .all(|s| s.tag("team") == Some("core"))
    );
}
