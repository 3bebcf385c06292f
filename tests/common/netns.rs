//! Several hosts on one machine: network namespaces made by the test
//! (`ip netns`), each with one veth link to a bridge in a hub namespace,
//! addresses 10.X.0.N/24. Traffic stays inside them (and on each one's
//! loopback). Needs root and iproute2; everything is removed on drop
//! (processes still inside a namespace are killed first).

use std::process::{Command, Stdio};

/// A private network of namespaces.
pub struct Net {
    prefix: String,
    /// Second octet of the subnet (10.X.0.0/24).
    subnet: u8,
    hosts: Vec<String>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Net {
    /// A hub namespace with a bridge; `None` (with a note) where namespaces
    /// cannot be made (not root, no iproute2).
    pub fn new(tag: &str) -> Option<Net> {
        let pid = std::process::id();
        // Short names: interface names are at most 15 bytes.
        let prefix = format!("x{}{}", &tag[..tag.len().min(3)], pid % 100_000);
        let subnet = 100 + (pid % 100) as u8;
        let net = Net {
            prefix,
            subnet,
            hosts: Vec::new(),
        };
        let hub = net.ns("hub");
        let made = ip(&["netns", "add", &hub])
            .and_then(|()| ip(&["-n", &hub, "link", "set", "lo", "up"]))
            .and_then(|()| ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]))
            .and_then(|()| ip(&["-n", &hub, "link", "set", "br0", "up"]));
        if let Err(e) = made {
            eprintln!("note: cannot make network namespaces ({e}): skipped");
            let _ = ip(&["netns", "del", &hub]);
            return None;
        }
        Some(net)
    }

    /// The namespace's full name.
    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    /// The address of host number `n` (1..=250).
    pub fn addr(&self, n: u8) -> String {
        format!("10.{}.0.{n}", self.subnet)
    }

    /// Adds host `name` with address number `n`, linked to the bridge.
    pub fn host(&mut self, name: &str, n: u8) -> String {
        let ns = self.ns(name);
        let hub = self.ns("hub");
        let outside = format!("{}h{n}", self.prefix);
        let inside = format!("{}v{n}", self.prefix);
        let addr = format!("{}/24", self.addr(n));
        let steps: [&[&str]; 8] = [
            &["netns", "add", &ns],
            &["-n", &ns, "link", "set", "lo", "up"],
            &[
                "-n", &hub, "link", "add", &outside, "type", "veth", "peer", "name", &inside,
                "netns", &ns,
            ],
            &["-n", &hub, "link", "set", &outside, "master", "br0"],
            &["-n", &hub, "link", "set", &outside, "up"],
            &["-n", &ns, "link", "set", &inside, "name", "eth0"],
            &["-n", &ns, "addr", "add", &addr, "dev", "eth0"],
            &["-n", &ns, "link", "set", "eth0", "up"],
        ];
        for s in steps {
            if let Err(e) = ip(s) {
                panic!("{e}");
            }
        }
        self.hosts.push(ns.clone());
        ns
    }

    /// `cmd ARGS` to run inside host `name`'s namespace.
    pub fn command(&self, name: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(name), program]);
        c
    }
}

fn kill_inside(ns: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if let Ok(p) = pid.parse::<i32>() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.hosts.iter().rev() {
            kill_inside(ns);
            let _ = ip(&["netns", "del", ns]);
        }
        let hub = self.ns("hub");
        kill_inside(&hub);
        let _ = ip(&["netns", "del", &hub]);
    }
}
