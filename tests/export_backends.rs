//! One mesh, two backends, chosen per proxy by TrafficTrace: the example of `config/regions/`
//! (EU traces stay in the EU) with its collector urls pointed at two in-test collectors.
//! A `web` proxy in eu-west calls a `backend` proxy in us-east; each proxy's spans must reach
//! its own region's collector, and only that one.

mod harness;

use std::time::Duration;

use harness::export::{Chain, Collector, Policy, metric};

const MESH: &str = include_str!("../config/regions/mesh.yaml");
const TRAFFIC_TRACES: &str = include_str!("../config/regions/traffic-traces.yaml");

/// The regions example, its urls replaced by the collectors'.
struct Regions {
    eu: Collector,
    us: Collector,
    policy: Policy,
}

impl Regions {
    async fn start() -> Regions {
        let eu = Collector::start().await;
        let us = Collector::start().await;
        let eu_url = "http://jaeger.eu-west.internal:9411/api/v2/spans";
        let us_url = "http://jaeger.us-east.internal:9411/api/v2/spans";
        assert!(
            MESH.contains(eu_url) && MESH.contains(us_url),
            "the example"
        );
        let mesh = MESH.replace(eu_url, &eu.url()).replace(us_url, &us.url());
        let policy = Policy::files(&[
            ("mesh.yaml", &mesh),
            ("traffic-traces.yaml", TRAFFIC_TRACES),
        ]);
        Regions { eu, us, policy }
    }

    /// web (eu-west) → backend (us-east) → app.
    async fn chain(&self) -> Chain {
        Chain::in_zones(&self.policy.path(), "eu-west", "us-east").await
    }
}

/// Sampled requests (the US backend samples 25% of new traces; a caller's decision wins).
async fn send(chain: &Chain, n: usize) {
    for _ in 0..n {
        chain.get("/echo", &[("x-b3-sampled", "1")]).await;
    }
}

#[tokio::test]
async fn each_proxy_picks_the_traffic_trace_of_its_zone() {
    // The two-tag selector outranks the catch-all for the EU proxy only (Kuma's rule).
    let regions = Regions::start().await;
    let chain = regions.chain().await;
    let chosen = |c: &harness::export::Sidecar| {
        (
            c.effective.traffic_trace.as_ref().map(|t| t.name.clone()),
            c.effective.backend.as_ref().map(|b| b.name.clone()),
        )
    };
    assert_eq!(
        chosen(&chain.web),
        (Some("trace-eu-in-eu".into()), Some("jaeger-eu".into()))
    );
    assert_eq!(
        chosen(&chain.backend),
        (Some("trace-everything".into()), Some("jaeger-us".into()))
    );
}

#[tokio::test]
async fn each_proxy_exports_to_its_own_backend_only() {
    // Data residency: an EU proxy's spans never reach the US collector, and the reverse.
    let regions = Regions::start().await;
    let chain = regions.chain().await;
    send(&chain, 4).await;
    let eu = regions.eu.wait_for_json(4).await;
    let us = regions.us.wait_for_proto(4).await;
    // A few more batch intervals: anything misrouted would arrive by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(regions.eu.json_spans().len(), 4);
    assert_eq!(regions.us.proto_spans().len(), 4);
    for span in &eu {
        assert_eq!(span["localEndpoint"]["serviceName"], "web", "{span}");
        assert_eq!(span["kind"], "CLIENT");
    }
    for span in &us {
        let service = span
            .local_endpoint
            .as_ref()
            .map(|e| e.service_name.as_str());
        assert_eq!(service, Some("backend"), "{span:?}");
    }

    // And the accounting agrees: each proxy sampled and exported for its backend only.
    assert_eq!(chain.web.all_exported("jaeger-eu").await, 4);
    assert_eq!(chain.backend.all_exported("jaeger-us").await, 4);
    let web = chain.web.metrics.encode();
    let backend = chain.backend.metrics.encode();
    assert_eq!(metric(&web, "tracecar_spans_sampled_total", "jaeger-us"), 0);
    assert_eq!(
        metric(&backend, "tracecar_spans_sampled_total", "jaeger-eu"),
        0
    );
}

#[tokio::test]
async fn each_backend_receives_its_own_format() {
    // jaeger-eu takes the default JSON, jaeger-us asks for httpProto.
    let regions = Regions::start().await;
    let chain = regions.chain().await;
    send(&chain, 1).await;
    regions.eu.wait_for_json(1).await;
    regions.us.wait_for_proto(1).await;
    for post in regions.eu.posts() {
        assert_eq!(post.content_type, "application/json");
    }
    for post in regions.us.posts() {
        assert_eq!(post.content_type, "application/x-protobuf");
    }
}

#[tokio::test]
async fn a_trace_crossing_regions_keeps_one_trace_id_in_both_collectors() {
    // Split storage, one trace: the halves join on trace and span id (shared context).
    let regions = Regions::start().await;
    let chain = regions.chain().await;
    send(&chain, 1).await;
    let eu = regions.eu.wait_for_json(1).await;
    let us = regions.us.wait_for_proto(1).await;
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(
        eu[0]["traceId"].as_str(),
        Some(hex(&us[0].trace_id).as_str())
    );
    assert_eq!(eu[0]["id"].as_str(), Some(hex(&us[0].id).as_str()));
    assert!(us[0].shared, "the US server span shares the EU client span");
}
