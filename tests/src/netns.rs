//! Test hosts in Linux network namespaces made by the test: `n` nodes, each
//! in its own namespace, joined by a bridge in a hub namespace. A node can be
//! cut off from everything (its link on the bridge down), or only from the
//! other nodes (blackhole routes inside the namespaces), while the test
//! process, connected to the bridge with `connect_host`, still reaches it.
//!
//! Needs root (`ip netns`). `setup` fails with the reason unless
//! `KMS_TEST_SKIP_NETNS=1` is set, in which case it prints SKIPPED and the
//! test returns: never silently green.

use std::process::Command;

pub struct Net {
    pub hub: String,
    pub nodes: Vec<String>,
    pub subnet: u8,
    /// The host-side interface made by `connect_host`.
    host_if: Option<String>,
}

pub fn ip(args: &[&str]) -> Result<(), String> {
    let o = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

impl Net {
    /// Namespaces `<prefix>-h` (the bridge) and `<prefix>-0..n` with
    /// addresses 10.77.<subnet>.(1+i)/24.
    pub fn create(n: usize, subnet: u8) -> Result<Net, String> {
        let prefix = format!("kms{}s{subnet}", std::process::id());
        let mut net = Net {
            hub: format!("{prefix}-h"),
            nodes: Vec::new(),
            subnet,
            host_if: None,
        };
        ip(&["netns", "add", &net.hub])?;
        ip(&["-n", &net.hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &net.hub, "link", "set", "br0", "up"])?;
        for i in 0..n {
            let ns = format!("{prefix}-{i}");
            ip(&["netns", "add", &ns])?;
            net.nodes.push(ns.clone());
            let (v, h) = (format!("v{i}"), format!("h{i}"));
            ip(&[
                "-n", &net.hub, "link", "add", &h, "type", "veth", "peer", "name", &v, "netns", &ns,
            ])?;
            ip(&["-n", &net.hub, "link", "set", &h, "master", "br0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", net.addr(i)),
                "dev",
                &v,
            ])?;
            ip(&["-n", &ns, "link", "set", &v, "up"])?;
        }
        Ok(net)
    }

    /// The address of node `i`.
    pub fn addr(&self, i: usize) -> String {
        format!("10.77.{}.{}", self.subnet, i + 1)
    }

    /// Connects the test process's namespace to the bridge (address
    /// 10.77.<subnet>.200), so that in-process clients reach every node.
    pub fn connect_host(&mut self) -> Result<(), String> {
        let host_if = format!("kmsh{}s{}", std::process::id() % 100_000, self.subnet);
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", "hh", "netns", &self.hub,
        ])?;
        self.host_if = Some(host_if.clone());
        ip(&["-n", &self.hub, "link", "set", "hh", "master", "br0", "up"])?;
        ip(&[
            "addr",
            "add",
            &format!("10.77.{}.200/24", self.subnet),
            "dev",
            &host_if,
        ])?;
        ip(&["link", "set", &host_if, "up"])
    }

    /// Cuts node `i` off from everything (its link on the bridge down).
    pub fn cut(&self, i: usize) {
        ip(&["-n", &self.hub, "link", "set", &format!("h{i}"), "down"]).unwrap();
    }

    pub fn heal(&self, i: usize) {
        ip(&["-n", &self.hub, "link", "set", &format!("h{i}"), "up"]).unwrap();
    }

    /// Cuts node `i` off from the other nodes only (both directions), not
    /// from the host's clients.
    pub fn isolate(&self, i: usize) {
        self.routes(i, "replace");
    }

    pub fn rejoin(&self, i: usize) {
        self.routes(i, "del");
    }

    fn routes(&self, i: usize, op: &str) {
        for j in (0..self.nodes.len()).filter(|j| *j != i) {
            for (ns, to) in [(i, j), (j, i)] {
                let r = ip(&[
                    "-n",
                    &self.nodes[ns],
                    "route",
                    op,
                    "blackhole",
                    &format!("{}/32", self.addr(to)),
                ]);
                // `replace` is idempotent (two isolated nodes share a route);
                // a `del` of a route already gone is fine.
                if op == "replace" {
                    r.unwrap();
                }
            }
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if let Some(h) = &self.host_if {
            let _ = ip(&["link", "del", h]);
        }
        for ns in self.nodes.iter().chain([&self.hub]) {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// `Net::create`, or `None` (after printing SKIPPED) when namespaces cannot
/// be made and `KMS_TEST_SKIP_NETNS=1` says to skip.
pub fn setup(n: usize, subnet: u8) -> Option<Net> {
    match Net::create(n, subnet) {
        Ok(net) => Some(net),
        Err(e) => {
            if std::env::var("KMS_TEST_SKIP_NETNS").is_ok_and(|v| v == "1") {
                eprintln!("SKIPPED: cannot create network namespaces ({e})");
                None
            } else {
                panic!(
                    "cannot create network namespaces ({e}); run as root, or set \
                     KMS_TEST_SKIP_NETNS=1 to skip this test explicitly"
                );
            }
        }
    }
}
