//! Network namespaces as pods: create, address, join to a bridge, run commands inside, and
//! delete everything again — on drop too, so a failed run leaves nothing behind.
//!
//! Everything shells out to iproute2 (`ip`), the tool an operator would use by hand, so a
//! failing step prints the exact command that failed.

use std::process::{Command, Output, Stdio};

/// A failed setup step, naming the command.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("`{cmd}` failed: {reason}")]
    Command { cmd: String, reason: String },
    #[error("cannot run `{cmd}`: {source} (is iproute2 installed? `apt-get install iproute2`)")]
    Spawn { cmd: String, source: std::io::Error },
}

/// Runs a command to completion, failing with its stderr.
pub fn run(args: &[&str]) -> Result<Output, NetnsError> {
    let cmd = args.join(" ");
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NetnsError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(NetnsError::Command {
            cmd,
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

/// A named network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates `name` (deleting a leftover of the same name first) with loopback up.
    pub fn create(name: &str) -> Result<Netns, NetnsError> {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        run(&["ip", "netns", "add", name])?;
        let ns = Netns {
            name: name.to_string(),
        };
        ns.run(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A command that will run inside this namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs a command inside the namespace to completion.
    pub fn run(&self, args: &[&str]) -> Result<Output, NetnsError> {
        let mut all = vec!["ip", "netns", "exec", self.name.as_str()];
        all.extend_from_slice(args);
        run(&all)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Joins `pod` to the bridge `bridge` living in `node`: a veth pair with one end in each,
/// the pod end named `eth0` with `addr/prefix` and a default route via `gateway`.
pub fn attach(
    node: &Netns,
    bridge: &str,
    pod: &Netns,
    host_if: &str,
    addr: &str,
    prefix: u8,
    gateway: &str,
) -> Result<(), NetnsError> {
    run(&[
        "ip", "link", "add", host_if, "netns", &node.name, "type", "veth", "peer", "name", "eth0",
        "netns", &pod.name,
    ])?;
    node.run(&["ip", "link", "set", host_if, "master", bridge])?;
    node.run(&["ip", "link", "set", host_if, "up"])?;
    pod.run(&[
        "ip",
        "addr",
        "add",
        &format!("{addr}/{prefix}"),
        "dev",
        "eth0",
    ])?;
    pod.run(&["ip", "link", "set", "eth0", "up"])?;
    pod.run(&["ip", "route", "add", "default", "via", gateway])?;
    Ok(())
}

/// Creates a bridge in `node` with address `addr/prefix`. Its MAC address is fixed: a
/// Linux bridge otherwise takes the lowest MAC among its ports, so attaching a later pod
/// can change it under pods that already cached the gateway's MAC, and their packets to
/// the node are dropped until ARP refreshes (seconds to a minute).
pub fn bridge(node: &Netns, name: &str, addr: &str, prefix: u8) -> Result<(), NetnsError> {
    node.run(&[
        "ip",
        "link",
        "add",
        name,
        "address",
        "02:77:65:66:74:01",
        "type",
        "bridge",
    ])?;
    node.run(&[
        "ip",
        "addr",
        "add",
        &format!("{addr}/{prefix}"),
        "dev",
        name,
    ])?;
    node.run(&["ip", "link", "set", name, "up"])?;
    Ok(())
}

/// Is this process root (needed for namespaces and iptables)?
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The tools a lab needs that are missing from PATH.
pub fn missing_tools(tools: &[&str]) -> Vec<String> {
    tools
        .iter()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
        .map(|t| t.to_string())
        .collect()
}
