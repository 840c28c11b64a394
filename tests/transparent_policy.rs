//! The Dataplane side of transparent proxying (README, Transparent proxying): `networking.transparentProxying`
//! and outbound `address`, as validation reports them and as `explain` shows the listeners.

use std::path::Path;

use tracecar::policy::effective::{Direction, RedirectPorts};
use tracecar::policy::load::parse_str;
use tracecar::policy::resource::Resource;
use tracecar::policy::validate::{diagnostics_for, validate_resource};

fn dataplane(networking_extra: &str, outbounds: &str) -> String {
    format!(
        "type: Dataplane\nmesh: default\nname: web-1\nnetworking:\n  address: 10.0.0.5\n{networking_extra}  inbound:\n    - port: 8080\n      tags: {{kuma.io/service: web, kuma.io/protocol: http}}\n  outbound:\n{outbounds}"
    )
}

fn outbound(address: &str, port: u16) -> String {
    format!(
        "    - address: \"{address}\"\n      port: {port}\n      tags: {{kuma.io/service: backend, kuma.io/protocol: http}}\n      endpoints: [\"10.0.0.9:8080\"]\n"
    )
}

fn lines(yaml: &str) -> Vec<String> {
    let (resources, mut found) = parse_str(Path::new("dp.yaml"), yaml);
    for r in &resources {
        found.extend(diagnostics_for(r.kind(), r.meta(), validate_resource(r)));
    }
    found
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect()
}

fn effective(yaml: &str) -> tracecar::policy::effective::Effective {
    let (resources, found) = parse_str(Path::new("dp.yaml"), yaml);
    assert!(found.is_empty(), "{found:?}");
    let Some(Resource::Dataplane(dp)) = resources.into_iter().next() else {
        panic!("a Dataplane")
    };
    tracecar::policy::effective::compute(&dp, &[], &[], 1)
}

const TP: &str =
    "  transparentProxying:\n    redirectPortInbound: 15006\n    redirectPortOutbound: 15001\n";

#[test]
fn absent_redirect_ports_default_to_kumas() {
    let e = effective(&dataplane(
        "  transparentProxying: {}\n",
        &outbound("10.96.0.10", 80),
    ));

    assert_eq!(
        e.transparent_proxying,
        Some(RedirectPorts {
            inbound: 15006,
            outbound: 15001
        })
    );
}

#[test]
fn a_redirect_port_out_of_range_is_reported_at_its_path() {
    let yaml = dataplane(
        "  transparentProxying:\n    redirectPortInbound: 70000\n",
        &outbound("10.96.0.10", 80),
    );

    assert_eq!(
        lines(&yaml),
        [
            "dp.yaml: Dataplane/web-1: networking.transparentProxying.redirectPortInbound: port must be in the range [1, 65535]"
        ]
    );
}

#[test]
fn equal_redirect_ports_are_an_error() {
    let yaml = dataplane(
        "  transparentProxying:\n    redirectPortInbound: 15001\n",
        &outbound("10.96.0.10", 80),
    );

    assert_eq!(
        lines(&yaml),
        [
            "dp.yaml: Dataplane/web-1: networking.transparentProxying.redirectPortOutbound: redirectPortInbound and redirectPortOutbound have to differ"
        ]
    );
}

#[test]
fn a_listener_on_a_redirect_port_is_an_error() {
    let yaml = dataplane(TP, &outbound("127.0.0.1", 15006));

    assert_eq!(
        lines(&yaml),
        [
            "dp.yaml: Dataplane/web-1: networking.outbound[0].port: port 15006 is already used by networking.transparentProxying.redirectPortInbound"
        ]
    );
}

#[test]
fn an_outbound_address_that_is_not_an_ip_is_an_error() {
    let yaml = dataplane(TP, &outbound("backend.svc", 80));

    assert_eq!(
        lines(&yaml),
        [
            "dp.yaml: Dataplane/web-1: networking.outbound[0].address: address has to be valid IP address"
        ]
    );
}

#[test]
fn with_transparent_proxying_a_service_vip_outbound_is_virtual() {
    let e = effective(&dataplane(TP, &outbound("10.96.0.10", 80)));

    let out = e
        .listeners
        .iter()
        .find(|l| l.direction == Direction::Outbound)
        .expect("outbound");
    assert!(out.is_virtual);
}

#[test]
fn with_transparent_proxying_a_loopback_outbound_stays_a_listener() {
    let e = effective(&dataplane(TP, &outbound("127.0.0.1", 16001)));

    let out = e
        .listeners
        .iter()
        .find(|l| l.direction == Direction::Outbound)
        .expect("outbound");
    assert!(!out.is_virtual);
}

#[test]
fn without_transparent_proxying_every_outbound_is_bound() {
    let e = effective(&dataplane("", &outbound("10.96.0.10", 80)));

    assert!(e.listeners.iter().all(|l| !l.is_virtual));
    assert_eq!(e.transparent_proxying, None);
}

#[test]
fn with_transparent_proxying_inbounds_are_reached_through_the_redirect_port() {
    // The application itself listens on the inbound's port; tracecar must not take it.
    let e = effective(&dataplane(TP, &outbound("10.96.0.10", 80)));

    let inbound = e
        .listeners
        .iter()
        .find(|l| l.direction == Direction::Inbound)
        .expect("inbound");
    assert!(inbound.is_virtual);
}
