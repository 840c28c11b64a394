//! `tracecar redirect install|uninstall`: the nftables rules that send a network namespace's
//! TCP traffic to tracecar's redirect ports (README, Transparent proxying), in a table of tracecar's own so
//! that installing and removing them touches nothing else.
//!
//! The rules are handed to the `nft` tool as a script. Installing declares the table, deletes
//! it, and declares it again with its chains, all in one transaction: run twice, the ruleset is
//! the same as run once. Removing declares and deletes it, so removing twice is harmless too.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};

/// The table holding every rule tracecar installs, in the `inet` family (IPv4 and IPv6).
pub const TABLE: &str = "tracecar";

/// What to redirect and what to leave alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Port that redirected inbound connections go to (Dataplane `redirectPortInbound`).
    pub inbound_port: u16,
    /// Port that redirected outbound connections go to (Dataplane `redirectPortOutbound`).
    pub outbound_port: u16,
    /// tracecar's own uid: its upstream connections are not redirected back to it.
    pub uid: u32,
    /// Inbound destination ports left alone.
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound destination ports left alone.
    pub exclude_outbound_ports: Vec<u16>,
}

impl Rules {
    /// The nft script that installs the rules, replacing any earlier tracecar table.
    pub fn install_script(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "add table inet {TABLE}");
        let _ = writeln!(s, "delete table inet {TABLE}");
        let _ = writeln!(s, "table inet {TABLE} {{");
        // Connections arriving from elsewhere: to tracecar's inbound port, which matches them
        // to an inbound by their original port.
        let _ = writeln!(s, "  chain prerouting {{");
        let _ = writeln!(
            s,
            "    type nat hook prerouting priority dstnat; policy accept;"
        );
        let _ = writeln!(s, "    meta l4proto != tcp return");
        let _ = writeln!(s, "    iifname \"lo\" return");
        if let Some(set) = port_set(&self.exclude_inbound_ports) {
            let _ = writeln!(s, "    tcp dport {set} return");
        }
        let _ = writeln!(s, "    tcp dport {} return", self.inbound_port);
        let _ = writeln!(s, "    meta l4proto tcp redirect to :{}", self.inbound_port);
        let _ = writeln!(s, "  }}");
        // Connections this namespace opens: to tracecar's outbound port, except tracecar's
        // own and those that stay on loopback.
        let _ = writeln!(s, "  chain output {{");
        let _ = writeln!(s, "    type nat hook output priority -100; policy accept;");
        let _ = writeln!(s, "    meta l4proto != tcp return");
        let _ = writeln!(s, "    meta skuid {} return", self.uid);
        let _ = writeln!(s, "    ip daddr 127.0.0.0/8 return");
        let _ = writeln!(s, "    ip6 daddr ::1 return");
        if let Some(set) = port_set(&self.exclude_outbound_ports) {
            let _ = writeln!(s, "    tcp dport {set} return");
        }
        let _ = writeln!(
            s,
            "    meta l4proto tcp redirect to :{}",
            self.outbound_port
        );
        let _ = writeln!(s, "  }}");
        let _ = writeln!(s, "}}");
        s
    }
}

/// The nft script that removes tracecar's table, present or not.
pub fn uninstall_script() -> String {
    format!("add table inet {TABLE}\ndelete table inet {TABLE}\n")
}

fn port_set(ports: &[u16]) -> Option<String> {
    let mut ports = ports.to_vec();
    ports.sort_unstable();
    ports.dedup();
    match ports.as_slice() {
        [] => None,
        [one] => Some(one.to_string()),
        many => Some(format!(
            "{{ {} }}",
            many.iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Resolves `--uid`: a number, or a user name from `/etc/passwd`.
pub fn resolve_uid(user: &str) -> Result<u32, String> {
    if let Ok(uid) = user.parse::<u32>() {
        return Ok(uid);
    }
    let passwd = std::fs::read_to_string("/etc/passwd")
        .map_err(|e| format!("--uid {user}: cannot read /etc/passwd: {e}"))?;
    passwd
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let uid = fields.nth(1)?.parse::<u32>().ok()?;
            (name == user).then_some(uid)
        })
        .next()
        .ok_or_else(|| format!("--uid {user}: no such user"))
}

/// Runs `nft -f -` with the script, with an error a person can act on.
pub fn apply(script: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                "the nft tool is not installed (Debian/Ubuntu: apt-get install nftables; Alpine: apk add nftables)".to_string()
            }
            _ => format!("cannot run nft: {e}"),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("cannot write to nft: {e}"))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| format!("nft failed: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("Operation not permitted") {
        return Err(
            "nft: operation not permitted: changing the nftables ruleset needs the NET_ADMIN capability"
                .to_string(),
        );
    }
    let first = stderr
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message");
    Err(format!("nft failed: {first}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            inbound_port: 15006,
            outbound_port: 15001,
            uid: 5678,
            exclude_inbound_ports: vec![9901],
            exclude_outbound_ports: vec![9901, 22, 9901],
        }
    }

    #[test]
    fn tracecar_traffic_is_never_redirected_back_to_it() {
        assert!(rules().install_script().contains("meta skuid 5678 return"));
    }

    #[test]
    fn excluded_ports_are_sorted_and_listed_once() {
        assert!(
            rules()
                .install_script()
                .contains("tcp dport { 22, 9901 } return")
        );
    }

    #[test]
    fn installing_replaces_the_table_in_one_script() {
        let script = rules().install_script();
        assert!(script.starts_with("add table inet tracecar\ndelete table inet tracecar\n"));
    }

    #[test]
    fn a_numeric_uid_needs_no_user_entry() {
        assert_eq!(resolve_uid("5678"), Ok(5678));
    }

    #[test]
    fn an_unknown_user_is_named_in_the_error() {
        let err = resolve_uid("no-such-user-tracecar").unwrap_err();
        assert_eq!(err, "--uid no-such-user-tracecar: no such user");
    }
}
